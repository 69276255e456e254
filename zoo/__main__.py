"""`python -m zoo`: the command line."""

import sys

from zoo.cli import main

sys.exit(main())
