"""``python -m resulic.cli``: the ``resulic`` command."""

import sys

from .commands import main

sys.exit(main())
