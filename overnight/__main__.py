"""``python -m overnight`` runs the CLI (the guard matters: vLLM starts worker processes)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
