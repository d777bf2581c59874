"""The driver, the CLI and everything that runs on the controlling process.

Ray decides at import whether a cluster it starts may use the machine's network address: with
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 its GCS, raylet, workers and dashboard listen on 127.0.0.1 only, but the
variable is read once, when `ray` is imported. Every entry point (`agrpo`, `python -m cluster.train`) imports
this package first, so it is set here, before anything of ours imports ray. Under `ray job submit` (RAY_ADDRESS
set) the driver joins the job's cluster and its node address must stay the real one, so it is left alone.
"""

import os
import sys

_LOOPBACK_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_before = os.environ.get(_LOOPBACK_VAR, "")
if "RAY_ADDRESS" not in os.environ:
    os.environ.setdefault(_LOOPBACK_VAR, "0")

LOCAL_RAY_ON_LOOPBACK = os.environ.get(_LOOPBACK_VAR, "").lower() in ("0", "false") and (
    "ray" not in sys.modules or _before.lower() in ("0", "false")
)
"""False when a local cluster started by this process would listen on every interface (ray was imported
before the variable was set, or the variable says so)."""
