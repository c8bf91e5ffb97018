"""A plugin module registering the test components of :mod:`vlcore.testing.components`:
the ``tiny-cnn`` image encoder and the ``hashed-bow`` text encoder.

It is not installed through an entry point; tests register it for themselves, e.g.
``register_plugin(vlcore.testing.plugin)`` or ``host.register(vlcore.testing.plugin, "vlcore.testing")``.
"""
from __future__ import annotations

from vlcore import hookimpl

from .components import HashedTextEncoder, TinyImageEncoder

#: the name it is registered under by :func:`vlcore.testing.contract_host`
PLUGIN_NAME = "vlcore.testing"


@hookimpl
def register_image_encoders(register):
    register(TinyImageEncoder)


@hookimpl
def register_text_encoders(register):
    register(HashedTextEncoder)
