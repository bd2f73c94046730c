"""`python -m turbomem.bench ...` (same as `python -m turbomem bench ...`)."""

from turbomem._cli import run_main

from .cli import main

run_main(main)  # quiet on a broken pipe (`... | head`)
