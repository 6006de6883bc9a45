"""`python -m zsris_rt.commands ...` is `zsris-rt ...`."""

import sys

from .main import main

sys.exit(main())
