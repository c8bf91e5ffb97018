"""Bundled vlcore plugins (installed as ``vlcore.plugins``)."""
