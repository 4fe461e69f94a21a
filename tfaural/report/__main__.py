"""``python -m tfaural.report``: see :mod:`tfaural.report.cli`."""

import sys

from tfaural.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
