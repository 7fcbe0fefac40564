"""Infer: where an installed Python distribution's files are, for weights shipped in one.

A manifest with ``package = "deepbet"`` names weights by their path inside that
distribution (its RECORD, PEP 627), found through :mod:`importlib.metadata`, so the node
never downloads them and never imports the package's code.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

__all__ = ["package_root", "package_version"]


def package_root(name: str) -> Path | None:
    """The folder a distribution's RECORD paths are relative to (its ``site-packages``),
    or ``None`` when it is not installed."""
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(str(distribution.locate_file("")))


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
