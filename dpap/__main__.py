"""``python -m dpap``: the same as the ``dpap`` command."""

import sys

from dpap.cli import main

sys.exit(main())
