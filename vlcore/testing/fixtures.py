"""pytest fixtures for testing vlcore plugins.  Enable them in your ``conftest.py``::

    pytest_plugins = ["vlcore.testing.fixtures"]

Fixtures:

``vl_host``            a fresh :class:`vlcore.core.registry.PluginHost` with the installed plugins
                       (``VL_LOAD_PLUGINS`` applies)
``register_plugin``    ``register_plugin(plugin, name=None) -> host``: registers a plugin object or
                       module on ``vl_host`` for this test only and makes that host the process-wide
                       one (so ``vl`` commands run in-process see it); both undone after the test
``vl_cache_dir``       a temporary ``VL_CACHE_DIR`` for this session (images, embeddings, features)
``tiny_pairs``         pair data in memory: 8 images x 2 captions, 16 px, 32-d caption embeddings
``tiny_embedded``      the ``embedded`` dataset's train split at toy size (16 images, 16 px),
                       captions embedded with the ``hashed-bow`` encoder
``tiny_image_encoder`` a built ``tiny-cnn`` image encoder (16 px, 16-d features)
``tiny_text_encoder``  a built ``hashed-bow`` text encoder (32-d, no download)
``tiny_spec``          the :class:`vlcore.model.encoder.ModelSpec` of those two test encoders
``tiny_run``           a :class:`vlcore.testing.runs.TinyRun` ``(host, data, buffer)`` for this session:
                       2 ``tiny-cnn`` experts (2 epochs) trained on ``tiny_pairs``, the buffer
                       distillers are tested on; run a distiller over it with
                       ``vlcore.testing.runs.tiny_distill(tiny_run, distiller, out)``

The test components' classes are in :mod:`vlcore.testing.components`; to use them by name
(``--encoder tiny-cnn``), ``register_plugin(vlcore.testing.plugin)``.
"""
from __future__ import annotations

import os

import pytest

from vlcore.core.registry import PluginHost


@pytest.fixture(scope="session")
def vl_cache_dir(tmp_path_factory):
    """A temporary ``VL_CACHE_DIR`` for the session; the previous value is restored afterwards."""
    old = os.environ.get("VL_CACHE_DIR")
    path = tmp_path_factory.mktemp("vl-cache")
    os.environ["VL_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("VL_CACHE_DIR", None)
    else:
        os.environ["VL_CACHE_DIR"] = old


@pytest.fixture
def vl_host():
    """A fresh plugin host loading the installed plugins (honours ``VL_LOAD_PLUGINS``)."""
    return PluginHost()


@pytest.fixture
def register_plugin(vl_host):
    """``register_plugin(plugin, name=None)``: register ``plugin`` on ``vl_host`` for this test and
    make ``vl_host`` the process-wide host; returns the host.  Undone after the test."""
    import contextlib

    from .host import registered  # local: torch loads when a fixture that needs it runs

    with contextlib.ExitStack() as stack:
        def register(plugin, name: str | None = None):
            return stack.enter_context(registered(plugin, name, host=vl_host))

        yield register


@pytest.fixture
def tiny_spec():
    from .data import TINY_SPEC  # local: torch loads when a fixture that needs it runs

    return TINY_SPEC


@pytest.fixture
def tiny_pairs():
    from .data import tiny_pairs as make  # local: torch loads when a fixture that needs it runs

    return make()


@pytest.fixture
def tiny_embedded(vl_cache_dir):
    from .data import tiny_embedded as make  # local: torch loads when a fixture that needs it runs

    return make()


@pytest.fixture
def tiny_image_encoder():
    import torch

    from .components import TinyImageEncoder  # local: torch loads when a fixture that needs it runs

    torch.manual_seed(0)
    return TinyImageEncoder(TinyImageEncoder.Config(), image_size=16)


@pytest.fixture
def tiny_text_encoder():
    from .components import HashedTextEncoder  # local: torch loads when a fixture that needs it runs

    return HashedTextEncoder(HashedTextEncoder.Config())


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    from .runs import tiny_buffer  # local: torch loads when a fixture that needs it runs

    return tiny_buffer(tmp_path_factory.mktemp("tiny-run") / "buffer")
