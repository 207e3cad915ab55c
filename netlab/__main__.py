"""`python -m netlab` is the `netlab` command."""

import sys

from .cli import main

sys.exit(main())
