"""The root of the one component lineage.

Every component class (image and text encoders, datasets, distillers, selectors, evaluators,
unroll backends, loggers) subclasses :class:`Component` through its kind's base class: a lowercase
``name``, a docstring whose first line is its help text, a nested frozen dataclass ``Config``
holding its options, built as ``cls(config)`` (image encoders also take ``image_size``), and the
``@abstractmethod``\\ s of its kind.  The kinds themselves are declared once, in
:data:`vlcore.core.kinds.KINDS`; an algorithmic kind takes one typed context object
(``select(ctx)``, ``evaluate(ctx)``, a distiller's recipe steps), so a new field in a context
changes no signature.
"""
from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, fields
from typing import ClassVar


class Component(ABC):
    """Base of every component kind."""

    name: ClassVar[str] = ""

    @dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring (its help text)."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def named_components(self) -> list[tuple[str, str]]:
        """(kind, name) of every component its Config names (the fields declared with metadata
        ``{"kind": ...}``, e.g. a distiller's unroll backend), so a command checks they exist before
        any work; none for a Config that names none."""
        return [(f.metadata["kind"], getattr(self.config, f.name)) for f in fields(self.config)
                if f.metadata.get("kind") and getattr(self.config, f.name) is not None]
