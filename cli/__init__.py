"""The ``vl`` command line (installed as ``vlcore.cli``)."""
