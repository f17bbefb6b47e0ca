"""``python -m privkit``: the same as the ``privkit`` command."""

import sys

from privkit.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
