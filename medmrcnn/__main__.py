"""`python -m medmrcnn` (also what `torchrun -m medmrcnn` runs)."""

import sys

from medmrcnn.cli import main

sys.exit(main())
