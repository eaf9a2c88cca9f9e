"""``python -m datacomp`` (also what ``torchrun -m datacomp`` launches)."""

import sys

from .cli import main

sys.exit(main())
