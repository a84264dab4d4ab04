"""The data package's one exception type."""

from __future__ import annotations


class DataError(Exception):
    """Data can't be prepared or used: a one-line message saying what is wrong and what would fix it."""
