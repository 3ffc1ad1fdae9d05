"""`python -m harness`: the ptcheck command line."""

import sys

from .cli import main

sys.exit(main())
