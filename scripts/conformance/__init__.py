"""The node's DICOM Conformance Statement (PS3.2), generated from the code's own tables.

``python -m scripts.conformance > docs/conformance.md`` (``make conformance``) writes it;
``tests/unit/test_conformance.py`` fails when the document and the code disagree.
"""

from __future__ import annotations

from .document import render

__all__ = ["render"]
