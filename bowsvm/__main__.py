"""``python -m bowsvm``: the same as the ``bowsvm`` console script."""

import sys

from bowsvm.cli import main

sys.exit(main())
