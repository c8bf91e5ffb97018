"""The component kinds, declared once.

Each :class:`Kind` names its hook (generated into :mod:`vlcore.core.hookspecs`), the base class every
registered class must subclass (checked at registration), the contract check plugin authors run
(:mod:`vlcore.testing.contracts`) and the other spellings ``vl list`` accepts.  Bases and contracts
are ``"module:attribute"`` references, imported only when used, so reading this table (``vl
--help``) imports no torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from vlcore.core.errors import UnknownComponentError, suggest


@dataclass(frozen=True)
class Kind:
    name: str
    hook: str
    #: "module:Class" of the base class
    base: str
    #: "module:function" of the contract check
    contract: str
    aliases: tuple[str, ...] = ()
    #: one line for the hook's docstring
    doc: str = ""

    @property
    def noun(self) -> str:
        """``image encoder`` for ``image_encoder``."""
        return self.name.replace("_", " ")

    @property
    def plural(self) -> str:
        return self.noun + "s"

    def base_class(self) -> type:
        return _resolve(self.base)

    def contract_check(self):
        return _resolve(self.contract)


def _resolve(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


_C = "vlcore.testing.contracts:"

#: every component kind, in the order ``vl --help`` lists them
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("image_encoder", "register_image_encoders", "vlcore.model.encoder:ImageEncoder", _C + "check_image_encoder",
         ("encoder",), "image encoders: a backbone from pixels in [0, 1] to global features"),
    Kind("text_encoder", "register_text_encoders", "vlcore.model.text:TextEncoder", _C + "check_text_encoder",
         (), "frozen text encoders: captions to fixed vectors"),
    Kind("dataset", "register_datasets", "vlcore.data.dataset:Dataset", _C + "check_dataset",
         (), "datasets: images with several captions each, in named splits"),
    Kind("distiller", "register_distillers", "vlcore.distill.contract:Distiller", _C + "check_distiller",
         (), "distillers: synthesise a small pair set (a recipe of overridable steps)"),
    Kind("selector", "register_selectors", "vlcore.distill.coreset:Selector", _C + "check_selector",
         ("method", "coreset"), "coreset selectors: choose a budget of real pairs"),
    Kind("evaluator", "register_evaluators", "vlcore.training.evaluate:Evaluator", _C + "check_evaluator",
         (), "evaluators: score a pair set by training fresh models on it"),
    Kind("unroll_backend", "register_unroll_backends", "vlcore.distill.unroll:UnrollBackend",
         _C + "check_unroll_backend", ("unroll", "backend"),
         "unroll backends: how distillers differentiate through the student's steps"),
    Kind("logger", "register_loggers", "vlcore.artifacts.loggers:Logger", _C + "check_logger", ("log", "tracker"),
         "loggers: experiment tracking of a run's scalars and figures (jsonl, TensorBoard, wandb)"),
)}


def normalise_kind(kind: str) -> str:
    """The kind name for any accepted spelling: ``image-encoders``, ``encoder``, ``methods``..."""
    k = kind.strip().lower().replace("-", "_")
    if k.endswith("s") and (k[:-1] in KINDS or any(k[:-1] in v.aliases for v in KINDS.values())):
        k = k[:-1]
    for v in KINDS.values():
        if k in v.aliases:
            return v.name
    if k not in KINDS:
        raise UnknownComponentError(
            f"Unknown component kind '{kind}'.{suggest(k, KINDS)} Available: {', '.join(KINDS)}.")
    return k


def spellings() -> list[str]:
    """Every spelling ``vl list KIND`` accepts."""
    out = set()
    for v in KINDS.values():
        for n in (v.name, *v.aliases):
            out.update((n, n + "s"))
    return sorted(out)
