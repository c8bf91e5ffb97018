"""The component API for plugin authors, in one import: the base class of every kind, the typed
contexts of the algorithmic kinds and the recipe contract, e.g.
``from vlcore.components import Distiller, RecipeConfig, RunState, StepResult``.

Each name is defined in its layer (:mod:`vlcore.core.component`, :mod:`vlcore.model.encoder`, ...);
this module only hands them on, and nothing inside vlcore/ imports it.
"""
from __future__ import annotations

from vlcore.artifacts.loggers import Logger
from vlcore.core.component import Component
from vlcore.data.dataset import Dataset, Split
from vlcore.distill.contract import (
    VOLATILE, DistillContext, Distiller, PeriodicEval, RecipeConfig, RunState, StepResult,
)
from vlcore.distill.coreset import SelectContext, Selection, Selector
from vlcore.distill.unroll import UnrollBackend
from vlcore.model.encoder import ImageEncoder
from vlcore.model.text import TextEncoder
from vlcore.training.evaluate import EvalContext, Evaluator

__all__ = ["Component", "ImageEncoder", "TextEncoder", "Dataset", "Split", "Distiller", "RecipeConfig",
           "DistillContext", "PeriodicEval", "RunState", "StepResult", "VOLATILE", "Selector", "SelectContext", "Selection",
           "Evaluator", "EvalContext", "UnrollBackend", "Logger"]
