"""Fixtures and contract tests for vlcore components, for the bundled plugins and third-party ones.

* :mod:`vlcore.testing.contracts`: ``check_image_encoder(cls)``, ``check_text_encoder(cls)``,
  ``check_dataset(cls, options)``, ``check_selector(cls)``, ``check_distiller(cls, options)``,
  ``check_evaluator(cls, options)``, ``check_unroll_backend(cls)``, ``check_logger(cls, options)`` and
  ``check_component(kind, cls)``:
  what every component of a kind must do (one module per kind in the package, the checks every
  kind shares in ``contracts._common``).
* :mod:`vlcore.testing.fixtures`: a pytest plugin (``pytest_plugins = ["vlcore.testing.fixtures"]``
  in your conftest.py) with ``vl_host``, ``register_plugin``, tiny data, tiny encoders and a tiny
  expert buffer (``tiny_run``).
* :mod:`vlcore.testing.components`: ``TinyImageEncoder`` (``tiny-cnn``) and ``HashedTextEncoder``
  (``hashed-bow``), fast download-free components, which :mod:`vlcore.testing.plugin` registers,
  and ``FirstPairs`` (``first-pairs``), a selector to register in a test.
* :mod:`vlcore.testing.data`: ``tiny_pairs()``, ``tiny_embedded()`` and ``TINY_SPEC``.
* :mod:`vlcore.testing.runs`: runs that take seconds: the command lines ``TINY_DATA_ARGS``,
  ``TINY_MODEL_ARGS``, ``FAST_DISTILL_ARGS``; recipe files (``tiny_recipe(stages)`` with
  ``EXPERTS_STAGE``, ``RANDOM_STAGE``, ``DISTILL_STAGE``); expert buffers (``cli_buffer(out)``
  through ``vl experts``, ``tiny_buffer(out)`` in process) and a distiller run over one
  (``tiny_context``, ``tiny_distill``), ``interrupted(cls, at)``; the ``embedded`` dataset for a spec
  (``embedded_splits(spec, host)``, ``embedded_buffer(spec, train, out)``); ``CONVNET_SPEC``.
* :mod:`vlcore.testing.host`: ``registered(plugin)`` and ``use_host(host)`` context managers.
* :mod:`vlcore.testing.cli`: ``run_vl(*args)`` runs the ``vl`` command in a subprocess,
  ``invoke_vl(*args)`` in this process, ``refused_cleanly(result, code, fragments)`` checks a
  refusal (exit status, no traceback, the message).

The names below are imported on first use, so ``import vlcore.testing.fixtures`` (pytest start-up)
does not import torch.  See docs/writing-plugins.md.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CHECKS": "contracts", "ContractError": "contracts", "check_component": "contracts",
    "check_dataset": "contracts", "check_distiller": "contracts", "check_evaluator": "contracts",
    "check_image_encoder": "contracts", "check_selector": "contracts", "check_text_encoder": "contracts",
    "check_unroll_backend": "contracts", "check_logger": "contracts", "selector_context": "contracts",
    "TINY_SPEC": "data", "tiny_embedded": "data", "tiny_pairs": "data",
    "contract_host": "host", "registered": "host", "use_host": "host",
    "TinyImageEncoder": "components", "HashedTextEncoder": "components", "FirstPairs": "components",
    "run_vl": "cli", "invoke_vl": "cli", "refused_cleanly": "cli",
    "TINY_DATA_ARGS": "runs", "TINY_MODEL_ARGS": "runs", "FAST_DISTILL_ARGS": "runs", "TINY_COMMON": "runs",
    "EXPERTS_STAGE": "runs", "RANDOM_STAGE": "runs", "DISTILL_STAGE": "runs", "tiny_recipe": "runs",
    "cli_buffer": "runs",
    "TinyRun": "runs", "tiny_buffer": "runs", "tiny_context": "runs", "tiny_distill": "runs",
    "interrupted": "runs", "embedded_splits": "runs", "embedded_buffer": "runs", "CONVNET_SPEC": "runs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vlcore.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
