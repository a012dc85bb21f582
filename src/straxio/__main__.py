"""``python -m straxio``: the command line (see :mod:`straxio.cli`)."""

import sys

from .cli import main

# The guard matters: process-pool workers (spawn) import the main module.
if __name__ == "__main__":
    sys.exit(main())
