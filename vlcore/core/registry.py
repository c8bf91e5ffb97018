"""Plugin loading and the component registry.

Plugins are found through the ``vlcore`` entry-point group; the bundled plugins are declared in
vlcore's own pyproject the same way a third-party package declares its own.  The host is built by
:func:`get_host` (once per process, on first use) or :class:`PluginHost` directly (tests build
their own), never at import time.
"""
from __future__ import annotations

import importlib.metadata as md
import logging
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from vlcore.core import hookspecs
from vlcore.core.config import build_config
from vlcore.core.errors import UnknownComponentError, VLError, suggest
from vlcore.core.kinds import KINDS, Kind, normalise_kind  # noqa: F401 (normalise_kind re-exported)

log = logging.getLogger(__name__)

GROUP = "vlcore"
ENV_ALLOW = "VL_LOAD_PLUGINS"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_.\-]*$")


class DuplicateComponentError(VLError):
    pass


@dataclass
class PluginInfo:
    name: str
    package: str | None
    version: str | None
    bundled: bool
    module: str
    components: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "package": self.package, "version": self.version,
                "bundled": self.bundled, "module": self.module, "components": self.components,
                **({"error": self.error} if self.error else {})}


class PluginHost:
    """A pluggy manager plus the registry of components it registered."""

    def __init__(self, *, load_entrypoints: bool = True, allow: Iterable[str] | None = None,
                 report=None):
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.failed: list[PluginInfo] = []
        self._report = report if report is not None else (lambda msg: print(msg, file=sys.stderr))
        self._registry: dict[str, dict[str, type]] | None = None
        self._owner: dict[str, dict[str, str]] = {}
        if load_entrypoints:
            if allow is None:
                env = os.environ.get(ENV_ALLOW)
                allow = None if env is None else [p.strip() for p in env.split(",") if p.strip()]
            self._load_entrypoints(None if allow is None else {_canon(a) for a in allow})
        self.pm.check_pending()

    # ---------------------------------------------------------------- loading
    def _load_entrypoints(self, allow: set[str] | None) -> None:
        for ep in sorted(md.entry_points(group=GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name)):
            dist = ep.dist.name if ep.dist else None
            if allow is not None and _canon(dist or "") not in allow:
                continue
            if self.pm.has_plugin(ep.name):
                continue
            version = ep.dist.version if ep.dist else None
            info = PluginInfo(ep.name, dist, version, _canon(dist or "") == "vlcore", ep.value)
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not stop vl
                info.error = f"{type(exc).__name__}: {exc}"
                self.failed.append(info)
                self._report(
                    f'Error importing plugin "{ep.name}" from package "{dist}": {info.error}\n'
                    f"  vl continues without it. Fix or uninstall the package, or set "
                    f"{ENV_ALLOW} to the packages to load (e.g. {ENV_ALLOW}=vlcore).")
                log.debug("plugin import failure:\n%s", traceback.format_exc())
                continue
            try:
                self.register(module, ep.name, info=info)
            except pluggy.PluginValidationError as exc:
                if self.pm.has_plugin(ep.name):
                    self.pm.unregister(name=ep.name)
                self.plugins.pop(ep.name, None)
                info.error = f"invalid hook implementation in module '{ep.value}': {_explain_invalid(module, exc)}"
                self.failed.append(info)
                self._report(f'Error loading plugin "{ep.name}" from package "{dist}": {info.error}\n'
                             f"  vl continues without it.")

    def register(self, plugin: Any, name: str, *, info: PluginInfo | None = None) -> None:
        """Register a plugin object (a module or any object with hookimpls)."""
        self.pm.register(plugin, name=name)
        self.plugins[name] = info or PluginInfo(name, None, None, False, getattr(plugin, "__name__", repr(plugin)))
        self._registry = None
        self.pm.check_pending()

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.plugins.pop(name, None)
        self._registry = None

    # --------------------------------------------------------------- registry
    def _build(self) -> None:
        registry: dict[str, dict[str, type]] = {k: {} for k in KINDS}
        owner: dict[str, dict[str, str]] = {k: {} for k in KINDS}
        for info in self.plugins.values():
            info.components = {}
        for kind in KINDS.values():
            caller = getattr(self.pm.hook, kind.hook)
            for impl in reversed(caller.get_hookimpls()):
                impl.function(register=self._registrar(kind, impl.plugin_name, registry[kind.name],
                                                       owner[kind.name]))
        self._registry, self._owner = registry, owner

    def _registrar(self, kind: Kind, plugin: str, items: dict[str, type], owner: dict[str, str]):
        """The ``register`` callback a plugin's hook gets for ``kind``: checks the class (a class,
        of the kind's base, with a valid lowercase name not taken by another plugin)."""
        base = kind.base_class()

        def register(cls):
            name = getattr(cls, "name", None)
            if not isinstance(cls, type) or not issubclass(cls, base):
                raise VLError(f"Plugin '{plugin}' registered {cls!r} as a {kind.noun}, but a {kind.noun} must be "
                              f"a class subclassing {base.__module__}.{base.__qualname__}.")
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise VLError(f"Plugin '{plugin}' registered a {kind.noun} {cls!r} without a "
                              f"valid lowercase 'name' attribute (got {name!r}).")
            if name in items:
                raise DuplicateComponentError(
                    f"Duplicate {kind.noun} name '{name}': registered by plugin "
                    f"'{owner[name]}' and by plugin '{plugin}'. Uninstall one of them, or "
                    f"set {ENV_ALLOW} to the packages to load.")
            items[name] = cls
            owner[name] = plugin
            info = self.plugins.get(plugin)
            if info is not None:
                info.components.setdefault(kind.name, []).append(name)
            return cls

        return register

    @property
    def registry(self) -> dict[str, dict[str, type]]:
        if self._registry is None:
            self._build()
        return self._registry  # type: ignore[return-value]

    def names(self, kind: str) -> list[str]:
        return sorted(self.registry[normalise_kind(kind)])

    def owner(self, kind: str, name: str) -> str:
        kind = normalise_kind(kind)
        self.get(kind, name)  # builds the registry; unknown names raise
        return self._owner[kind][name]

    def get(self, kind: str, name: str) -> type:
        kind = normalise_kind(kind)
        items = self.registry[kind]
        key = name.strip().lower() if isinstance(name, str) else name
        if key in items:
            return items[key]
        avail = ", ".join(sorted(items)) or "(none installed)"
        raise UnknownComponentError(f"Unknown {KINDS[kind].noun} '{name}'.{suggest(str(key), items)} "
                                    f"Available: {avail}.")

    def config(self, kind: str, name: str, options: dict | None = None):
        """The component's Config built strictly from ``options`` (unknown keys, wrong types: ConfigError)."""
        cls = self.get(kind, name)
        return build_config(cls.Config, options, owner=f"{KINDS[normalise_kind(kind)].noun} '{cls.name}'")

    def create(self, kind: str, name: str, options: dict | None = None, **init: Any):
        """Build a component: look up its class, build its Config strictly, construct it with
        ``cls(config, **init)`` (image encoders take ``image_size=``)."""
        cls = self.get(kind, name)
        return cls(self.config(kind, name, options), **init)

    def add_commands(self, cli) -> None:
        self.pm.hook.register_commands(cli=cli)

    def plugin_table(self) -> list[PluginInfo]:
        self._build()  # fills each plugin's components
        return list(self.plugins.values()) + self.failed


def _explain_invalid(plugin: Any, exc: Exception) -> str:
    """Name the misspelled hooks of ``plugin`` with a suggestion, else pluggy's own message."""
    hooks = [k.hook for k in KINDS.values()] + ["register_commands"]
    bad = []
    for attr in dir(plugin):
        if getattr(getattr(plugin, attr, None), f"{GROUP}_impl", None) is not None and attr not in hooks:
            bad.append(f"unknown hook '{attr}'.{suggest(attr, hooks)}")
    return "; ".join(bad) or str(exc)


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_HOST: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide host, built on first use."""
    global _HOST
    if _HOST is None:
        _HOST = PluginHost()
    return _HOST


def set_host(host: PluginHost | None) -> None:
    """Replace (or with None, reset) the process-wide host; used by tests."""
    global _HOST
    _HOST = host
