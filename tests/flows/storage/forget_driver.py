"""`python -m tests.flows.storage.forget_driver OUT ID...`: `talktime forget` on OUT, without the CLI.

With TALKTIME_CRASH_AFTER_OPS=N in the environment the process SIGKILLs itself right before its
N-th mutating storage operation (`tests.crash_hook`, around `Store`). Prints the number of
mutating storage operations it performed.
"""

from __future__ import annotations

import sys

from flows.storage.forget import forget
from tests import crash_hook

if __name__ == "__main__":
    crash_hook.install_counter(crash_hook.crash_at_from_environment())
    forget(sys.argv[1], sys.argv[2:])
    print(crash_hook.operations())
