"""`python -m turbomem.bench ...` (same as `python -m turbomem bench ...`)."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
