"""`python -m tests.flows.storage.forget_driver OUT ID...`: `talktime forget` on OUT, without the CLI.

With TALKTIME_CRASH_AFTER_OPS=N in the environment the process SIGKILLs itself right before its
N-th mutating storage operation (`tests.crash_driver`'s hook around `Store`). Prints the number of
mutating storage operations it performed.
"""

from __future__ import annotations

import os
import sys

from flows.storage.forget import forget
from tests import crash_driver

if __name__ == "__main__":
    crash_driver.install_counter(int(os.environ.get(crash_driver.CRASH_ENV, "0") or 0))
    forget(sys.argv[1], sys.argv[2:])
    print(crash_driver._ops)
