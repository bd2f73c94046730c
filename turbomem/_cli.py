"""What every command-line entry point of TurboMem (and the examples) shares."""

from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn, Optional

SIGPIPE_STATUS = 128 + 13  # what a shell reports for a process killed by SIGPIPE


def run_main(main: Callable[[Optional[list[str]]], Optional[int]], argv: Optional[list[str]] = None) -> NoReturn:
    """``sys.exit(main(argv))``, but quiet when the reader of stdout goes away (``... | head``)."""
    try:
        status = main(argv)
        sys.stdout.flush()  # a late broken pipe is raised here, not at interpreter exit
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's own final flush cannot
        # print "Exception ignored ... BrokenPipeError" either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        sys.exit(SIGPIPE_STATUS)
    sys.exit(status)
