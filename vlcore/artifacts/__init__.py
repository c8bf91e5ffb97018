"""Artifacts and I/O: atomic writes and fingerprints, output folders and their locks, interrupts,
the run-state checkpoint format, TOML files and recipe files, experiment tracking (loggers) and the
Hugging Face hub helpers.  It imports only :mod:`vlcore.core`."""
