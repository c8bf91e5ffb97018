"""Fixtures and contract tests for vlcore components (usable by third-party plugins)."""
