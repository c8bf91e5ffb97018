"""Tiny runs for tests: the command lines, recipe files and expert buffers of runs that take seconds.

Command lines (lists to splice into :func:`vlcore.testing.cli.invoke_vl` or ``run_vl`` arguments):

``TINY_DATA_ARGS``     the bundled ``embedded`` dataset at toy size: 24 train and 12 dev scenes
                       rendered at 32 px
``TINY_MODEL_ARGS``    a ``convnet`` image encoder of width 8 on 16 px images (the default text
                       encoder)
``FAST_DISTILL_ARGS``  a distillation of 4 pairs, 2 student steps from a start epoch <= 1 matched
                       against 1 expert epoch, no evaluation (add ``--iterations`` as a test needs)

Recipe files (``vl run``):

``TINY_COMMON``        the ``[common]`` table of that dataset and model
``EXPERTS_STAGE``      a stage training 1 expert for 2 epochs in batches of 16
``RANDOM_STAGE``       a stage selecting a random coreset of 4 pairs
``DISTILL_STAGE``      a stage distilling the ``buffer`` stage's experts: 4 pairs, 2 iterations of 2
                       student steps, no evaluation
``tiny_recipe(stages, description=None, **common)``
                       the text of a recipe file: ``TINY_COMMON`` updated with ``common`` (keys as
                       in the file, e.g. ``seed=0``; a None value drops the key) and one
                       ``[stages.NAME]`` table per item of ``stages``, in order (none: the
                       ``[common]`` table alone); override a stage's settings with
                       ``{**DISTILL_STAGE, "iterations": 3}``

Models:

``CONVNET_SPEC``       the :class:`vlcore.model.encoder.ModelSpec` of a fully trained ``convnet`` of width 8
                       and depth 2 on 16 px images (the default text encoder)

Expert buffers:

``cli_buffer(out, *args, num_experts=2, epochs=2)``
                       ``vl experts`` of the tiny command line into ``out`` (in this process);
                       returns ``out``
``tiny_buffer(out, epochs=2, ...)``
                       a :class:`TinyRun` ``(host, data, buffer)``: 2 experts of the test
                       components (``tiny-cnn``, ``hashed-bow``; :data:`vlcore.testing.data.TINY_SPEC`)
                       trained in this process on :func:`vlcore.testing.data.tiny_pairs` (8 images
                       x 2 captions), on a host of their own (:func:`vlcore.testing.host.contract_host`),
                       the buffer the contract checks of distillers train
``tiny_context(run, out, **kw)``
                       the :class:`vlcore.distill.contract.DistillContext` ``vl distill`` would hand a
                       distiller over that run's buffer and data, saving into ``out``
``tiny_distill(run, distiller, out, **kw)``
                       ``vlcore.distill.recipe.run(distiller, tiny_context(run, out, **kw))``
                       with the run's host made the process-wide one
``interrupted(cls, at, step="step")``
                       a subclass of the distiller ``cls`` (the same method, so its checkpoint
                       resumes as ``cls``) interrupted as by Ctrl-C (``KeyboardInterrupt``) on the
                       ``at``-th call of its recipe step ``step``: run it, then ``cls`` with
                       ``resume=True``, to test that a resumed run ends as an uninterrupted one
``embedded_splits(spec, host, num_train=40, num_dev=20)``
                       the ``embedded`` dataset's train and dev pair data for ``spec`` (scenes
                       rendered at 32 px, captions embedded by ``spec``'s text encoder)
``embedded_buffer(spec, train, out, epochs=3, **expert)``
                       2 experts of ``spec`` trained on that pair data ``train`` in batches of 32
                       (``expert``: more :class:`vlcore.training.experts.ExpertConfig` fields) into
                       ``out``, the dataset recorded as ``embedded``
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from vlcore.artifacts.tomlfile import dumps
from vlcore.data.pipeline import build_dataset, build_text_encoder, split_data
from vlcore.distill.contract import DistillContext
from vlcore.distill.recipe import run as run_recipe
from vlcore.model.encoder import ModelSpec
from vlcore.training.experts import ExpertConfig, train_experts

from .cli import invoke_vl
from .data import TINY_SPEC, tiny_pairs
from .host import contract_host, use_host

TINY_DATA_ARGS = ["--dataset", "embedded", "--dataset-option", "num_train=24", "--dataset-option", "num_dev=12",
                  "--dataset-option", "image_size=32"]
TINY_MODEL_ARGS = ["--encoder", "convnet", "--encoder-option", "width=8", "--image-size", "16"]
FAST_DISTILL_ARGS = ["--pairs", "4", "--syn-steps", "2", "--expert-epochs", "1", "--max-start-epoch", "1", "--no-eval"]

CONVNET_SPEC = ModelSpec(encoder="convnet", encoder_options={"width": 8, "depth": 2}, image_size=16, trainable="full")

TINY_COMMON: dict[str, Any] = {"dataset": "embedded", "dataset-option": ["num_train=24", "num_dev=12", "image_size=32"],
                               "encoder": "convnet", "encoder-option": ["width=8"], "image-size": 16}
EXPERTS_STAGE: dict[str, Any] = {"run": "experts", "num-experts": 1, "epochs": 2, "batch-size": 16}
RANDOM_STAGE: dict[str, Any] = {"run": "coreset", "method": "random", "budget": 4}
DISTILL_STAGE: dict[str, Any] = {"run": "distill", "buffer": "@buffer", "pairs": 4, "iterations": 2, "syn-steps": 2,
                                 "max-start-epoch": 1, "no-eval": True}


def tiny_recipe(stages: dict[str, dict[str, Any]], description: str | None = None, **common: Any) -> str:
    """The text of a recipe file running ``stages`` (name -> settings) on the tiny dataset and model."""
    table = {k: v for k, v in {**TINY_COMMON, **common}.items() if v is not None}
    recipe = {"recipe": {"description": description}} if description is not None else {}
    return dumps({**recipe, "common": table, **({"stages": dict(stages)} if stages else {})})


def cli_buffer(out: str | Path, *args: Any, num_experts: int = 2, epochs: int = 2) -> Path:
    """``vl experts`` of the tiny dataset and model into ``out`` (extra flags ``args``); returns ``out``."""
    invoke_vl("experts", *TINY_DATA_ARGS, *TINY_MODEL_ARGS, "--num-experts", num_experts, "--epochs", epochs,
              "--batch-size", 16, *args, "--out", out)
    return Path(out)


class TinyRun(NamedTuple):
    """What a distiller test runs on: the host, the training pair data, the expert buffer."""

    host: Any
    data: Any
    buffer: Any


def tiny_buffer(out: str | Path, epochs: int = 2, *, num_experts: int = 2, data=None, spec=None,
                host=None) -> TinyRun:
    """Experts (batches of 8, learning rate 0.05) of ``spec`` (default ``TINY_SPEC``) trained on
    ``data`` (default ``tiny_pairs(8, 2)``) into ``out``."""
    host, data = contract_host(host), data if data is not None else tiny_pairs(8, 2)
    with use_host(host):
        buf = train_experts(spec or TINY_SPEC, data,
                            ExpertConfig(num_experts=num_experts, epochs=epochs, batch_size=8, lr=0.05), Path(out),
                            dataset_info={"name": "tiny", "fingerprint": data.key})
    return TinyRun(host, data, buf)


def tiny_context(run: TinyRun, out: str | Path, *, spec=None, **kw: Any):
    """The distillation context of ``run`` (its dataset recorded as ``tiny``), saving into ``out``."""
    host, data, buf = run
    return DistillContext(spec=spec or TINY_SPEC, buffer=buf, train=data, out=out, host=host,
                          dataset_info={"name": "tiny", "fingerprint": data.key}, **kw)


def tiny_distill(run: TinyRun, distiller, out: str | Path, **kw: Any):
    """``distiller`` run over ``run`` into ``out`` (``kw``: more context fields); the pair set."""
    with use_host(run[0]):
        return run_recipe(distiller, tiny_context(run, out, **kw))


def interrupted(cls: type, at: int, step: str = "step") -> type:
    """``cls`` interrupted (``KeyboardInterrupt``) on the ``at``-th call of its method ``step``."""
    def interrupting(self, *args: Any, **kw: Any):
        calls = self.__dict__["_interrupt_calls"] = self.__dict__.get("_interrupt_calls", 0) + 1
        if calls == at:
            raise KeyboardInterrupt
        return getattr(super(interrupted_cls, self), step)(*args, **kw)

    interrupted_cls = type(f"Interrupted{cls.__name__}", (cls,), {
        step: interrupting, "__doc__": f"{cls.__name__} interrupted (Ctrl-C) on call {at} of {step}()."})
    return interrupted_cls


def embedded_splits(spec, host, num_train: int = 40, num_dev: int = 20):
    """``(train, dev)`` pair data of the ``embedded`` dataset (32 px scenes) for ``spec``."""
    ds = build_dataset("embedded", options={"num_train": num_train, "num_dev": num_dev, "image_size": 32}, host=host)
    te = build_text_encoder(spec, host)
    return split_data(ds.split("train"), spec, te), split_data(ds.split("dev"), spec, te)


def embedded_buffer(spec, train, out: str | Path, epochs: int = 3, **expert: Any):
    """The :class:`vlcore.training.buffer.Buffer` of 2 experts of ``spec`` trained on ``train`` into ``out``."""
    cfg = ExpertConfig(**{"num_experts": 2, "epochs": epochs, "batch_size": 32, **expert})
    return train_experts(spec, train, cfg, Path(out), dataset_info={"name": "embedded", "fingerprint": "x"})
