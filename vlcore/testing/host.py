"""Plugin hosts for tests: register a plugin for a while, make a host the process-wide one."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from vlcore.core import registry
from vlcore.core.registry import PluginHost, set_host
from vlcore.data import pipeline

from . import plugin as testing_plugin


def plugin_name(plugin: Any) -> str:
    """A readable default name for a plugin object: a module's or class's ``__name__``."""
    return getattr(plugin, "__name__", None) or type(plugin).__name__


@contextlib.contextmanager
def use_host(host: PluginHost) -> Iterator[PluginHost]:
    """Make ``host`` the process-wide host (what :func:`vlcore.core.registry.get_host` returns, and so
    what the ``vl`` commands and the pipeline helpers use) until the block ends; then restore the
    previous one.  Text encoders the pipeline built meanwhile are forgotten too."""
    old = registry._HOST
    cached = dict(pipeline._TEXT_ENCODERS)
    set_host(host)
    try:
        yield host
    finally:
        set_host(old)
        pipeline._TEXT_ENCODERS.clear()
        pipeline._TEXT_ENCODERS.update(cached)


@contextlib.contextmanager
def registered(plugin: Any, name: str | None = None, *, host: PluginHost | None = None) -> Iterator[PluginHost]:
    """Register ``plugin`` (a module, class or object with ``@hookimpl`` functions) on ``host``
    (default: a fresh :class:`PluginHost` with the installed plugins), make that host the
    process-wide one, and undo both when the block ends.

    The registry is built at once, so a duplicate component name or a misspelled hook fails here,
    not later.  A plugin that is already registered (e.g. installed and loaded from its entry
    point) is re-registered under ``name`` instead of twice.
    """
    host = host if host is not None else PluginHost()
    name = name or plugin_name(plugin)
    existing = host.pm.get_name(plugin)
    if existing is not None:
        host.unregister(existing)
    host.register(plugin, name)
    try:
        host.registry  # noqa: B018  (build now: duplicate names fail here)
        with use_host(host):
            yield host
    finally:
        if host.pm.has_plugin(name):
            host.unregister(name)


def contract_host(host: PluginHost | None = None) -> PluginHost:
    """``host`` (default: a fresh host with the installed plugins) with the test components of
    :mod:`vlcore.testing.plugin` (``tiny-cnn``, ``hashed-bow``) registered on it."""
    host = host if host is not None else PluginHost()
    if not host.pm.is_registered(testing_plugin):
        host.register(testing_plugin, testing_plugin.PLUGIN_NAME)
    return host
