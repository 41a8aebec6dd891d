"""`python -m flows.cli`: the `talktime` command."""

import sys

from flows.cli import main

sys.exit(main())
