"""``python -m angiorecon <task> ...`` — the CLI and the background worker entry point."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
