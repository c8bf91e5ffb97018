"""The hooks a vlcore plugin may implement, one per component kind (generated from
:data:`vlcore.core.kinds.KINDS`), plus ``register_commands``.

Each ``register_*`` hook receives a ``register`` callback and calls it with component *classes*
(not instances): ``register(MyEncoder)``.  A component class subclasses its kind's base class, has
a lowercase ``name``, a docstring (its one-line help) and a nested frozen dataclass ``Config``
holding its options; it is built with ``cls(config)`` (image encoders: ``cls(config,
image_size=...)``).
"""
from __future__ import annotations

import pluggy

from vlcore.core.kinds import KINDS

hookspec = pluggy.HookspecMarker("vlcore")
hookimpl = pluggy.HookimplMarker("vlcore")


def _make_spec(kind):
    def spec(register):
        pass

    base = kind.base.replace(":", ".")
    spec.__name__ = spec.__qualname__ = kind.hook
    spec.__doc__ = f"Register {kind.doc} (subclasses of ``{base}``)."
    spec.__module__ = __name__
    return hookspec(spec)


for _kind in KINDS.values():
    globals()[_kind.hook] = _make_spec(_kind)
del _kind


@hookspec
def register_commands(cli):
    """Add click commands to the ``vl`` group: ``@cli.command() def mycmd(): ...``."""
