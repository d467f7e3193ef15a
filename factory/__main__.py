"""``python -m factory``: the same command line as the ``factory`` entry point."""

import sys

from factory.cli import main

sys.exit(main())
