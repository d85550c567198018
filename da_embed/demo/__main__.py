"""``python -m da_embed.demo``: the main job (``make demo``)."""

import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())
