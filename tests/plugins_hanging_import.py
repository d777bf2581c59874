"""A reward module whose import hangs (a network call, a lock at import time): named in `rewards.modules` by the
test of the driver's time limit on building plugins. Nothing else may import it."""

from __future__ import annotations

import time

from tests.plugins_for_tests import HANG_S

time.sleep(HANG_S)
