"""The hooks a vlcore plugin may implement.  Each ``register_*`` hook receives a ``register``
callback and calls it with component *classes* (not instances): ``register(MyEncoder)``.

A component class has a lowercase ``name`` attribute, a docstring (its one-line help), and a nested
frozen dataclass ``Config`` holding its options; it is built with ``cls(config)``.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("vlcore")
hookimpl = pluggy.HookimplMarker("vlcore")


@hookspec
def register_image_encoders(register):
    """Register image encoder classes (subclasses of ``vlcore.model.ImageEncoder``)."""


@hookspec
def register_text_encoders(register):
    """Register frozen text encoder classes (subclasses of ``vlcore.text.TextEncoder``)."""


@hookspec
def register_datasets(register):
    """Register dataset classes (subclasses of ``vlcore.data.Dataset``)."""


@hookspec
def register_distillers(register):
    """Register distiller classes (subclasses of ``vlcore.components.Distiller``)."""


@hookspec
def register_selectors(register):
    """Register coreset selector classes (subclasses of ``vlcore.components.Selector``)."""


@hookspec
def register_evaluators(register):
    """Register evaluator classes (subclasses of ``vlcore.components.Evaluator``)."""


@hookspec
def register_unroll_backends(register):
    """Register unroll backends (subclasses of ``vlcore.unroll.UnrollBackend``) used by distillers."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``vl`` group: ``@cli.command() def mycmd(): ...``."""
