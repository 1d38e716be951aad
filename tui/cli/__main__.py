"""`python -m tui.cli ...`, as the tests run it: the same as `sluice ...`."""

import sys

from .main import main

sys.exit(main())
