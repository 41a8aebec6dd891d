"""`talktime ARGS` in a process of its own whose Prefect server is killed (SIGKILL) at one commit.

    python -m tests.prefect_outage_driver PGID COMMIT before|after ARGS...

kills the process group PGID (a `prefect server start` started in a session of its own) right
before or right after the COMMIT-th batch commit of the run, then lets the command go on.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def main() -> int:
    pgid, at, when, *argv = sys.argv[1:]
    from flows import runs
    from flows.cli import main as talktime

    real_commit = runs.Run.commit
    commits = 0

    def commit(self: Any, staged: Any, summary: Any) -> None:
        nonlocal commits
        commits += 1
        if commits == int(at) and when == "before":
            os.killpg(int(pgid), signal.SIGKILL)
            print(f"outage driver: Prefect killed before commit {commits}", file=sys.stderr, flush=True)
        real_commit(self, staged, summary)
        if commits == int(at) and when == "after":
            os.killpg(int(pgid), signal.SIGKILL)
            print(f"outage driver: Prefect killed after commit {commits}", file=sys.stderr, flush=True)
        print(f"outage driver: commit {commits} done", file=sys.stderr, flush=True)

    runs.Run.commit = commit  # type: ignore[method-assign]
    return talktime(argv)


if __name__ == "__main__":
    sys.exit(main())
