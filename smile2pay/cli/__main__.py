"""``python -m smile2pay.cli``: the same entry point as the ``smile2pay`` console script."""
import sys

from .main import main

sys.exit(main())
