"""``python -m da_embed.cli``: the ``da-embed`` command."""

import sys

from .app import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
