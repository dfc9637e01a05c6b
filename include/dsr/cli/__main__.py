"""``python -m include.dsr.cli``."""

import sys

from include.dsr.cli.app import main

sys.exit(main())
