"""``python -m resulic.cli``: the ``resulic`` command."""

import sys

from .commands import main

if __name__ == "__main__":
    sys.exit(main())
