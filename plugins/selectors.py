"""Coreset selectors (placeholder until the coreset work lands)."""
from vlcore import hookimpl  # noqa: F401
