"""The driver, the CLI and everything that runs on the controlling process.

Ray decides at import whether a cluster it starts may use the machine's network address: with
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 its GCS, raylet, workers and dashboard listen on 127.0.0.1 only, but the
variable is read once, when `ray` is imported. Every entry point (`agrpo`, `python -m cluster.train`) imports
this package first, so it is set here, before anything of ours imports ray. With the variable Ray also keeps a
loopback cluster address (`cluster.address=127.0.0.1:PORT`) as it is, instead of rewriting it to the machine's
network address where a loopback-only head does not listen. When RAY_ADDRESS names another host (`ray job submit`
to a real cluster) the driver joins that cluster and its node address must stay the real one, so it is left alone.
"""

import os
import sys

_LOOPBACK_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_before = os.environ.get(_LOOPBACK_VAR, "")
_address = os.environ.get("RAY_ADDRESS")
if _address is None or _address.split("://", 1)[-1].rpartition(":")[0].strip("[]") in ("127.0.0.1", "localhost", "::1"):
    os.environ.setdefault(_LOOPBACK_VAR, "0")

LOCAL_RAY_ON_LOOPBACK = os.environ.get(_LOOPBACK_VAR, "").lower() in ("0", "false") and (
    "ray" not in sys.modules or _before.lower() in ("0", "false")
)
"""False when a local cluster started by this process would listen on every interface (ray was imported
before the variable was set, or the variable says so)."""
