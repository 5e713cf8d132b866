"""``python -m mfv2`` is the ``mfv2`` command."""

import sys

from mfv2.cli import main

sys.exit(main())
