import sys

from fastadasp.cli import main

sys.exit(main())
