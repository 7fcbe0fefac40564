"""Core: fsync of a file or a folder by path: what makes a write or a new name durable.

On Linux a file's bytes are durable after ``fsync`` of the file, and a new, renamed or
removed name after ``fsync`` of the folder holding it (fsync(2)); every stage that
writes something it must not lose uses these two.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "fsync_file"]


def fsync_file(path: Path) -> None:
    """Flush a file's data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to the disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
