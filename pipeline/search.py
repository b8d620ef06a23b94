"""Search stage: find β, ε, η, C hitting a chosen compression (``dpap search``).

    python pipeline/search.py --target 0.6 --tolerance 0.02 --trials 30 [--workers 2]

Thin entry point: the logic lives in :mod:`dpap.search`; flags as ``dpap search --help``.
"""

import sys

from dpap.cli import main

if __name__ == "__main__":
    sys.exit(main(["search", *sys.argv[1:]]))
