"""`python -m fastadasp.plugins [--force] [--json] [--build-dir DIR]`: build the WeightedMerge plugin (or reuse an
up-to-date build) and print the library path and its SHA-256."""

import sys

from fastadasp.plugins.build import main

sys.exit(main())
