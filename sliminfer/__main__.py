"""``python -m sliminfer`` is the ``sliminfer`` command."""

import sys

from sliminfer.cli.main import main

sys.exit(main())
