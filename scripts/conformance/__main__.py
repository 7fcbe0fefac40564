"""Print the conformance statement: ``python -m scripts.conformance > docs/conformance.md``."""

from __future__ import annotations

import sys

from . import render

if __name__ == "__main__":
    sys.stdout.write(render())
