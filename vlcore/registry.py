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

from . import hookspecs
from .config import build_config
from .errors import UnknownComponentError, VLError, suggest

log = logging.getLogger(__name__)

GROUP = "vlcore"
ENV_ALLOW = "VL_LOAD_PLUGINS"

#: kind -> hook name.  The kind strings are what ``vl list KIND`` accepts.
KINDS: dict[str, str] = {
    "image_encoder": "register_image_encoders",
    "text_encoder": "register_text_encoders",
    "dataset": "register_datasets",
    "distiller": "register_distillers",
    "selector": "register_selectors",
    "evaluator": "register_evaluators",
    "unroll_backend": "register_unroll_backends",
}
_NOUN = {k: k.replace("_", " ") for k in KINDS}
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


def normalise_kind(kind: str) -> str:
    k = kind.strip().lower().replace("-", "_")
    if k.endswith("s") and k[:-1] in KINDS:
        k = k[:-1]
    aliases = {"encoder": "image_encoder", "method": "selector", "unroll": "unroll_backend",
               "backend": "unroll_backend", "coreset": "selector"}
    k = aliases.get(k, k)
    if k not in KINDS:
        raise UnknownComponentError(
            f"Unknown component kind '{kind}'.{suggest(k, KINDS)} Available: {', '.join(KINDS)}.")
    return k


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
        for kind, hookname in KINDS.items():
            caller = getattr(self.pm.hook, hookname)
            for impl in reversed(caller.get_hookimpls()):
                plugin_name = impl.plugin_name

                def register(cls, _kind=kind, _plugin=plugin_name):
                    name = getattr(cls, "name", None)
                    if not isinstance(name, str) or not _NAME_RE.match(name):
                        raise VLError(f"Plugin '{_plugin}' registered a {_NOUN[_kind]} {cls!r} without a "
                                      f"valid lowercase 'name' attribute (got {name!r}).")
                    if name in registry[_kind]:
                        raise DuplicateComponentError(
                            f"Duplicate {_NOUN[_kind]} name '{name}': registered by plugin "
                            f"'{owner[_kind][name]}' and by plugin '{_plugin}'. Uninstall one of them, or "
                            f"set {ENV_ALLOW} to the packages to load.")
                    registry[_kind][name] = cls
                    owner[_kind][name] = _plugin
                    info = self.plugins.get(_plugin)
                    if info is not None:
                        info.components.setdefault(_kind, []).append(name)
                    return cls

                impl.function(register=register)
        self._registry, self._owner = registry, owner

    @property
    def registry(self) -> dict[str, dict[str, type]]:
        if self._registry is None:
            self._build()
        return self._registry  # type: ignore[return-value]

    def names(self, kind: str) -> list[str]:
        return sorted(self.registry[normalise_kind(kind)])

    def owner(self, kind: str, name: str) -> str:
        self.registry
        return self._owner[normalise_kind(kind)][name]

    def get(self, kind: str, name: str) -> type:
        kind = normalise_kind(kind)
        items = self.registry[kind]
        key = name.strip().lower() if isinstance(name, str) else name
        if key in items:
            return items[key]
        noun = _NOUN[kind]
        avail = ", ".join(sorted(items)) or "(none installed)"
        raise UnknownComponentError(f"Unknown {noun} '{name}'.{suggest(str(key), items)} Available: {avail}.")

    def create(self, kind: str, name: str, options: dict | None = None):
        """Build a component: look up its class, build its Config strictly, construct it."""
        cls = self.get(kind, name)
        cfg_cls = getattr(cls, "Config", None)
        if cfg_cls is None:
            if options:
                raise VLError(f"{_NOUN[normalise_kind(kind)]} '{name}' takes no options (got {', '.join(options)}).")
            return cls()
        cfg = build_config(cfg_cls, options, owner=f"{_NOUN[normalise_kind(kind)]} '{cls.name}'")
        return cls(cfg)

    def add_commands(self, cli) -> None:
        self.pm.hook.register_commands(cli=cli)

    def plugin_table(self) -> list[PluginInfo]:
        self.registry
        return list(self.plugins.values()) + self.failed


def _explain_invalid(plugin: Any, exc: Exception) -> str:
    """Name the misspelled hooks of ``plugin`` with a suggestion, else pluggy's own message."""
    hooks = [n for n in dir(hookspecs) if n.startswith("register_")]
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
