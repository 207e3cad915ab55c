"""`python -m netlab` is the `netlab` command."""

import sys

from .entry import main

sys.exit(main())
