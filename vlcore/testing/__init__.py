"""Fixtures and contract tests for vlcore components, for the bundled plugins and third-party ones.

* :mod:`vlcore.testing.contracts`: ``check_image_encoder(cls)``, ``check_text_encoder(cls)``,
  ``check_dataset(cls, options)``, ``check_selector(cls)``, ``check_distiller(cls, options)``,
  ``check_evaluator(cls, options)``, ``check_unroll_backend(cls)``, ``check_logger(cls, options)`` and
  ``check_component(kind, cls)``:
  what every component of a kind must do.
* :mod:`vlcore.testing.fixtures`: a pytest plugin (``pytest_plugins = ["vlcore.testing.fixtures"]``
  in your conftest.py) with ``vl_host``, ``register_plugin``, tiny data and tiny encoders.
* :mod:`vlcore.testing.components`: ``TinyImageEncoder`` (``tiny-cnn``) and ``HashedTextEncoder``
  (``hashed-bow``), fast download-free components; :mod:`vlcore.testing.plugin` registers them.
* :mod:`vlcore.testing.data`: ``tiny_pairs()``, ``tiny_embedded()`` and ``TINY_SPEC``.
* :mod:`vlcore.testing.host`: ``registered(plugin)`` and ``use_host(host)`` context managers.
* :mod:`vlcore.testing.cli`: ``run_vl(*args)`` runs the ``vl`` command in a subprocess,
  ``invoke_vl(*args)`` in this process.

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
    "TinyImageEncoder": "components", "HashedTextEncoder": "components",
    "run_vl": "cli", "invoke_vl": "cli",
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
