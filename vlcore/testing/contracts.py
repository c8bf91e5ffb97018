"""Contract checks: what every component of a kind must do, whichever plugin it comes from.

Each ``check_<kind>(cls, options=None, ...)`` builds the component class ``cls`` the way ``vl``
does (its ``Config`` built strictly from ``options``) and runs it on tiny data on the CPU, raising
:class:`ContractError` (an ``AssertionError``) that names the component and the broken promise.
Exceptions raised by the component itself propagate unchanged (with a note saying which step
raised them), so a test can, e.g., skip on :class:`vlcore.errors.WeightsError`.

Every kind:

* is a subclass of its base class (``vlcore.model.ImageEncoder``, ``vlcore.text.TextEncoder``,
  ``vlcore.data.Dataset``, ``vlcore.components.Selector`` / ``Distiller`` / ``Evaluator``,
  ``vlcore.unroll.UnrollBackend``, ``vlcore.loggers.Logger``);
* sets its own lowercase ``name`` (``[a-z][a-z0-9_.-]*``) and its own docstring, whose first line
  is its help text;
* has a nested ``Config``: a frozen dataclass whose every field has a default, built from no
  options at all, whose values are plain JSON (artifacts record it).  Unroll backends may have none.

Then, per kind, see each function's docstring.  Use them from a plugin's tests::

    from vlcore.testing.contracts import check_selector
    from my_plugin import MySelector

    def test_contract():
        check_selector(MySelector, {"iterations": 5})

or :func:`check_component` with a kind name.  The checks that need a model, a buffer or pair
data use the test components of :mod:`vlcore.testing.plugin` (``tiny-cnn``, ``hashed-bow``),
registered on a host of their own that is made the process-wide host while they run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pickle
import re
import tempfile
import typing
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from vlcore.config import build_config
from vlcore.errors import VLError

from .data import TINY_SPEC, tiny_pairs
from .host import contract_host, use_host

__all__ = ["ContractError", "check_class", "check_config", "check_image_encoder", "check_text_encoder",
           "check_dataset", "check_selector", "check_distiller", "check_evaluator", "check_unroll_backend",
           "check_logger",
           "check_component", "CHECKS", "selector_context"]

NAME_RE = re.compile(r"^[a-z][a-z0-9_.\-]*$")
_JSON_TYPES = (str, int, float, bool, type(None))


class ContractError(AssertionError):
    """A component broke its kind's contract."""


# ============================================================================= helpers
def _bases() -> dict[str, type]:
    from vlcore.kinds import KINDS

    return {name: kind.base_class() for name, kind in KINDS.items()}


def _label(kind: str, cls: Any) -> str:
    name = getattr(cls, "name", None) or getattr(cls, "__name__", repr(cls))
    where = f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', '?')}"
    return f"{kind.replace('_', ' ')} '{name}' ({where})"


def _require(cond: Any, label: str, message: str) -> None:
    if not cond:
        raise ContractError(f"{label}: {message}")


@contextlib.contextmanager
def _step(label: str, what: str) -> Iterator[None]:
    """Annotate an exception raised by the component with the step that raised it."""
    try:
        yield
    except ContractError:
        raise
    except Exception as exc:
        if hasattr(exc, "add_note"):
            exc.add_note(f"(contract check of {label}: while {what})")
        raise


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-3, atol: float = 1e-4) -> bool:
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        return False
    return bool((a - b).abs().max() <= atol + rtol * b.abs().max()) if a.numel() else True


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t.detach()).all())


def _json_plain(value: Any) -> bool:
    if isinstance(value, _JSON_TYPES):
        return not (isinstance(value, float) and value != value)  # NaN is not JSON
    if isinstance(value, (list, tuple)):
        return all(_json_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_plain(v) for k, v in value.items())
    return False


def _config_json(cfg: Any) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# ============================================================================= every kind
def check_config(cls: type, options: dict | None = None, *, kind: str = "component") -> Any:
    """``cls.Config`` is a frozen dataclass, every field has a default and a resolvable type, the
    defaults are plain JSON values; returns ``Config`` built from ``options``."""
    label = _label(kind, cls)
    cfg_cls = getattr(cls, "Config", None)
    _require(isinstance(cfg_cls, type) and dataclasses.is_dataclass(cfg_cls), label,
             "needs a nested Config dataclass holding its options (use an empty "
             "@dataclass(frozen=True) class Config: pass when it has none)")
    _require(cfg_cls.__dataclass_params__.frozen, label,
             "Config must be frozen (@dataclass(frozen=True)): configs are recorded and compared, never mutated")
    try:
        typing.get_type_hints(cfg_cls)
    except Exception as exc:
        raise ContractError(f"{label}: the type annotations of Config cannot be resolved ({exc}); the "
                            f"strict config builder coerces CLI strings by them") from None
    missing = [f.name for f in dataclasses.fields(cfg_cls) if f.init and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    _require(not missing, label, f"every Config field needs a default (missing: {', '.join(missing)}); "
                                 f"`vl` builds a component from no options at all")
    default = build_config(cfg_cls, {}, owner=label)
    bad = {k: v for k, v in dataclasses.asdict(default).items() if not _json_plain(v)}
    _require(not bad, label, f"Config defaults must be plain JSON values (str, int, float, bool, None, lists, "
                             f"dicts) so artifacts can record them; got {bad!r}")
    with contextlib.suppress(dataclasses.FrozenInstanceError):
        fields = dataclasses.fields(default)
        if fields:
            setattr(default, fields[0].name, getattr(default, fields[0].name))
            raise ContractError(f"{label}: Config instances must be immutable")
    return build_config(cfg_cls, options or {}, owner=label)


def check_class(cls: type, kind: str, *, config_required: bool = True) -> None:
    """Base class, own lowercase ``name``, own docstring with a first line, and a valid ``Config``."""
    bases = _bases()
    if kind not in bases:
        raise ValueError(f"unknown component kind {kind!r}; one of {', '.join(bases)}")
    label = _label(kind, cls)
    _require(isinstance(cls, type), label, "register classes, not instances (they are built when used)")
    _require(issubclass(cls, bases[kind]), label,
             f"must subclass {bases[kind].__module__}.{bases[kind].__qualname__}")
    name = cls.__dict__.get("name")
    _require(isinstance(name, str) and NAME_RE.match(name), label,
             f"must set its own lowercase `name` class attribute matching {NAME_RE.pattern} (got {name!r})")
    doc = cls.__dict__.get("__doc__")
    _require(isinstance(doc, str) and doc.strip() and doc.strip().splitlines()[0].strip(), label,
             "needs its own docstring; its first line is the help text `vl list` and `vl --help` show")
    if config_required or getattr(cls, "Config", None) is not None:
        check_config(cls, kind=kind)


# ============================================================================= image encoders
def check_image_encoder(cls: type, options: dict | None = None, *, image_size: int = 32, batch: int = 2,
                        second_order: bool = True, lora: bool | None = None) -> Any:
    """An image encoder:

    * is built as ``cls(config, image_size=...)``, deterministically under a fixed seed;
    * has a positive integer ``feature_dim``, 3-channel ``mean``/``std``, string ``lora_targets``;
    * maps a (batch, 3, H, W) float batch in [0, 1] to finite float32 (batch, feature_dim) features,
      ``forward(x) == features(normalise(x))``, the same twice in eval mode, and each image's
      features independent of the rest of the batch in eval mode;
    * in train mode, every parameter receives a gradient (the distillation unroll differentiates
      with respect to all trainable parameters);
    * with ``second_order``: is differentiable twice through ``torch.func.functional_call`` (full
      training mode of bi-trajectory matching): gradients of a loss on parameter gradients reach
      the input pixels;
    * with ``lora`` (default: when it declares ``lora_targets``): each target names a module, and
      peft adapters injected there train.

    Returns the built encoder.
    """
    from torch.func import functional_call

    kind = "image_encoder"
    check_class(cls, kind)
    label = _label(kind, cls)
    cfg = check_config(cls, options, kind=kind)
    with _step(label, f"building it with {cfg!r} at image_size={image_size}"):
        torch.manual_seed(0)
        enc = cls(cfg, image_size=image_size)
        torch.manual_seed(0)
        twin = cls(cfg, image_size=image_size)
    _require(isinstance(enc, torch.nn.Module), label, "must be a torch.nn.Module")
    dim = enc.feature_dim
    _require(isinstance(dim, int) and not isinstance(dim, bool) and dim > 0, label,
             f"feature_dim must be a positive int after __init__ (got {dim!r})")
    for attr in ("mean", "std"):
        v = getattr(enc, attr)
        _require(isinstance(v, (tuple, list)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v), label,
                 f"`{attr}` must be 3 numbers, one per RGB channel (got {v!r})")
    _require(all(s > 0 for s in enc.std), label, f"std must be positive (got {enc.std!r})")
    targets = getattr(enc, "lora_targets", ())
    _require(isinstance(targets, (tuple, list)) and all(isinstance(t, str) for t in targets), label,
             f"lora_targets must be a tuple of module-name suffixes (got {targets!r})")
    trainable = getattr(cls, "default_trainable", None)
    _require(trainable in (None, "full", "frozen", "lora"), label,
             f"default_trainable must be 'full', 'frozen' or 'lora' (got {trainable!r})")
    sd, sd2 = enc.state_dict(), twin.state_dict()
    _require(sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd), label,
             "two encoders built under the same torch seed differ: initialise from torch's global RNG only")

    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, image_size, image_size, generator=g)
    enc.eval()
    with _step(label, f"running forward on a {tuple(x.shape)} batch"), torch.no_grad():
        y = enc(x)
        y_again = enc(x)
        y_one = enc(x[:1])
        y_feat = enc.features(enc.normalise(x))
    _require(isinstance(y, torch.Tensor) and y.shape == (batch, dim), label,
             f"forward must return ({batch}, feature_dim={dim}) features, got "
             f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    _require(y.dtype == torch.float32, label, f"features must be float32 (got {y.dtype})")
    _require(_finite(y), label, "features contain NaN or inf")
    _require(torch.equal(y, y_again), label, "forward is not deterministic in eval mode")
    _require(_close(y_one, y[:1]), label, "in eval mode an image's features depend on the rest of the batch")
    _require(_close(y_feat, y), label, "forward(x) must equal features(normalise(x))")

    enc.train()
    params = dict(enc.named_parameters())
    _require(params, label, "has no parameters")
    with _step(label, "back-propagating through forward in train mode"):
        out = enc(x)
        grads = torch.autograd.grad(out.square().mean(), list(params.values()), allow_unused=True)
    unused = [n for n, gr in zip(params, grads) if gr is None]
    _require(not unused, label, f"parameters {unused[:5]} get no gradient: every parameter must be used by "
                                f"forward (delete unused modules, e.g. a classifier head)")

    if second_order:
        with _step(label, "differentiating twice through torch.func.functional_call"):
            p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
            xg = x.clone().requires_grad_(True)
            target = torch.randn(batch, dim, generator=g)
            inner = ((functional_call(enc, p, (xg,)) - target) ** 2).mean()
            gp = torch.autograd.grad(inner, list(p.values()), create_graph=True)
            stepped = {k: v - 0.1 * gv for (k, v), gv in zip(p.items(), gp)}
            outer = (functional_call(enc, stepped, (xg,)) ** 2).mean()
            (gx,) = torch.autograd.grad(outer, xg)
        _require(_finite(gx) and gx.abs().sum() > 0, label,
                 "the gradient of a loss after one functional SGD step does not reach the pixels "
                 "(needed for full-mode bi-trajectory matching)")

    if lora is None:
        lora = bool(targets)
    if lora:
        from vlcore.model import ModelSpec, add_lora

        names = [n for n, _ in enc.named_modules()]
        for t in targets:
            _require(any(n == t or n.endswith("." + t) for n in names), label,
                     f"lora target {t!r} names no module (module names end with it, peft semantics)")
        with _step(label, "injecting LoRA adapters (peft) and training them"):
            torch.manual_seed(0)
            lenc = cls(cfg, image_size=image_size)
            add_lora(lenc, ModelSpec(encoder=cls.name, trainable="lora", image_size=image_size))
            lp = {n: q for n, q in lenc.named_parameters() if q.requires_grad}
            lout = lenc(x)
            lg = torch.autograd.grad(lout.square().mean(), list(lp.values()), allow_unused=True)
        _require(lp, label, "no LoRA parameters were injected")
        _require(lout.shape == (batch, dim), label, "LoRA changed the feature shape")
        _require(all(gr is not None for gr in lg), label, "some LoRA parameters get no gradient")
    enc.eval()
    return enc


# ============================================================================= text encoders
_TEXTS = ("a red circle on green grass", "two small blue squares in the snow",
          "A dog runs across the grass.", "the stock market fell sharply today")


def check_text_encoder(cls: type, options: dict | None = None, *, texts: tuple[str, ...] = _TEXTS) -> Any:
    """A text encoder:

    * is built as ``cls(config)``; ``dim`` is a positive int and does not change when it loads;
    * ``identity()`` is a non-empty string, the same for equal configs;
    * ``encode(texts)`` returns finite float32 CPU embeddings of shape (len(texts), dim), the same
      twice, each text's independent of the rest of the batch (and of ``batch_size``), different
      texts differently; ``encode([])`` is (0, dim);
    * works with the pipeline's cached :func:`vlcore.text.embed_texts`.

    Returns the built encoder.
    """
    from vlcore.text import embed_texts

    kind = "text_encoder"
    check_class(cls, kind)
    label = _label(kind, cls)
    cfg = check_config(cls, options, kind=kind)
    with _step(label, f"building it with {cfg!r}"):
        enc = cls(cfg)
        twin = cls(cfg)
    dim = enc.dim
    _require(isinstance(dim, int) and not isinstance(dim, bool) and dim > 0, label,
             f"dim must be a positive int (got {dim!r})")
    ident = enc.identity()
    _require(isinstance(ident, str) and ident.strip(), label, "identity() must be a non-empty string")
    _require(twin.identity() == ident, label, "identity() differs between two encoders with the same config")
    texts = list(texts)
    with _step(label, f"encoding {len(texts)} texts"):
        emb = enc.encode(texts)
        again = enc.encode(texts)
        one = enc.encode(texts[1:2])
        small = enc.encode(texts, batch_size=1)
        empty = enc.encode([])
    _require(isinstance(emb, torch.Tensor) and emb.shape == (len(texts), dim), label,
             f"encode must return ({len(texts)}, dim={dim}), got "
             f"{tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__}")
    _require(emb.dtype == torch.float32 and emb.device.type == "cpu", label,
             f"embeddings must be float32 on the CPU (got {emb.dtype} on {emb.device})")
    _require(_finite(emb), label, "embeddings contain NaN or inf")
    _require(enc.dim == dim, label, f"dim changed from {dim} to {enc.dim} when the model loaded")
    _require(_close(again, emb, atol=1e-5), label, "encode is not deterministic")
    _require(_close(one[0], emb[1]), label, "a text's embedding depends on the other texts of the batch")
    _require(_close(small, emb), label, "embeddings depend on batch_size")
    _require(not _close(emb[0], emb[3], rtol=0, atol=1e-6), label, "different texts get the same embedding")
    _require(isinstance(empty, torch.Tensor) and tuple(empty.shape) == (0, dim), label,
             f"encode([]) must return shape (0, {dim}) (got {tuple(getattr(empty, 'shape', ()))})")
    with _step(label, "embedding through vlcore.text.embed_texts"):
        cached = embed_texts(enc, texts, use_cache=False)
    _require(_close(cached, emb), label, "embed_texts disagrees with encode")
    return enc


# ============================================================================= datasets
def check_dataset(cls: type, options: dict | None = None, *, image_size: int = 16, splits: list[str] | None = None,
                  max_images: int = 3) -> Any:
    """A dataset:

    * its Config has ``root`` and ``limit`` (``--data`` and ``--limit`` set them);
    * ``splits()`` lists distinct names including ``train`` and ``default_eval_split``;
    * each split (or those in ``splits``) is a :class:`vlcore.data.Split` named after it and the
      dataset, with distinct string image ids and non-empty captions; its loader returns images
      that :func:`vlcore.data.load_images` turns into uint8 tensors, and it survives pickling
      (worker processes); a second instance gives the same ids, captions and fingerprint;
    * ``limit=1`` gives one train image; an unknown split raises a :class:`vlcore.errors.VLError`.

    ``options`` must make it loadable (e.g. ``{"root": DIR}``, or small sizes for generators).
    Returns the built dataset.
    """
    from vlcore.data import Split, load_images

    kind = "dataset"
    check_class(cls, kind)
    label = _label(kind, cls)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    _require({"root", "limit"} <= fields, label,
             f"Config needs `root` (the --data folder) and `limit` (--limit) fields (has {sorted(fields)})")
    options = dict(options or {})
    cfg = check_config(cls, options, kind=kind)
    with _step(label, f"building it with {cfg!r}"):
        ds = cls(cfg)
        names = ds.splits()
    _require(isinstance(names, list) and names and all(isinstance(n, str) for n in names), label,
             f"splits() must return a non-empty list of names (got {names!r})")
    _require(len(set(names)) == len(names), label, f"splits() lists a name twice: {names}")
    _require("train" in names, label, f"needs a 'train' split (has {names})")
    _require(cls.default_eval_split in names, label,
             f"default_eval_split {cls.default_eval_split!r} is not one of its splits {names}")
    twin = cls(build_config(cls.Config, options))
    for name in splits or names:
        with _step(label, f"loading split {name!r}"):
            s = ds.split(name)
        _require(isinstance(s, Split), label, f"split({name!r}) must return a vlcore.data.Split")
        _require(s.name == name and s.dataset == cls.name, label,
                 f"split {name!r} says it is {s.dataset}/{s.name}")
        _require(s.num_images >= 1, label, f"split {name!r} is empty")
        _require(all(isinstance(i, str) for i in s.image_ids) and len(set(s.image_ids)) == s.num_images, label,
                 f"split {name!r}: image ids must be distinct strings")
        _require(all(isinstance(c, str) and c.strip() for caps in s.captions for c in caps), label,
                 f"split {name!r}: every caption must be a non-empty string")
        n = min(max_images, s.num_images)
        with _step(label, f"loading {n} images of split {name!r}"):
            imgs = load_images(s.subset(n), image_size, use_cache=False)
            loader = pickle.loads(pickle.dumps(s.loader))
            reloaded = load_images(Split(s.dataset, s.name, s.image_ids[:1], s.captions[:1], loader, s.source),
                                   image_size, use_cache=False)
        _require(imgs.shape == (n, 3, image_size, image_size) and imgs.dtype == torch.uint8, label,
                 f"split {name!r}: images did not load as RGB")
        _require(torch.equal(reloaded[0], imgs[0]), label, f"split {name!r}: the unpickled loader gives other images")
        other = twin.split(name)
        _require(other.image_ids == s.image_ids and other.captions == s.captions, label,
                 f"split {name!r}: a second instance with the same config gives other images or captions")
        _require(other.fingerprint == s.fingerprint, label,
                 f"split {name!r}: the fingerprint (cache key) is not stable")
    limited = cls(build_config(cls.Config, {**options, "limit": 1}))
    with _step(label, "loading the train split with limit=1"):
        n1 = limited.split("train").num_images
    _require(n1 == 1, label, f"limit=1 must give 1 train image (got {n1})")
    try:
        ds.split("no-such-split")
    except VLError:
        pass
    except Exception as exc:
        raise ContractError(f"{label}: an unknown split must raise a VLError (e.g. DataError) with the "
                            f"available splits, not {type(exc).__name__}: {exc}") from None
    else:
        raise ContractError(f"{label}: split('no-such-split') did not raise")
    return ds


# ============================================================================= selectors
def selector_context(train, spec=TINY_SPEC, host=None, *, budget: int = 1, seed: int = 0, buffer=None,
                     dataset_info: dict | None = None):
    """The :class:`vlcore.components.SelectContext` ``vl coreset`` hands a selector's
    ``select(ctx)``, over ``train`` (pair data)."""
    from vlcore.components import SelectContext

    return SelectContext(train=train, spec=spec, budget=budget, seed=seed, buffer=buffer, device="cpu", host=host,
                         dataset_info=dataset_info or {"name": "tiny", "fingerprint": train.key})


def _indices(result: Any, label: str) -> torch.Tensor:
    idx = result if isinstance(result, torch.Tensor) else getattr(result, "indices", result)
    try:
        t = torch.as_tensor(idx)
    except Exception:
        raise ContractError(f"{label}: select() must return pair indices (a Selection, a tensor or a "
                            f"sequence of ints), got {type(result).__name__}") from None
    _require(t.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8) or t.numel() == 0, label,
             f"select() must return integer pair indices (got dtype {t.dtype})")
    return t.to(torch.long).reshape(-1)


def check_selector(cls: type, options: dict | None = None, *, data=None, budgets: list[int] | None = None,
                   seed: int = 0, host=None) -> Any:
    """A coreset selector, ``select(ctx)`` (the budget and seed are ``ctx.budget``, ``ctx.seed``):

    * returns exactly ``budget`` distinct pair indices of ``ctx.train`` (a ``Selection``, a tensor
      or a list of ints), at most one per image when its config has ``unique_images`` on, for
      budgets 1 and the largest allowed (the number of images, or of pairs);
    * returns the same pairs for the same seed;
    * leaves the training data untouched;
    * refuses a budget larger than the training split with a :class:`vlcore.errors.VLError`.

    ``data``: pair data (default :func:`vlcore.testing.data.tiny_pairs`, 8 images x 2 captions);
    models are ``tiny-cnn`` with ``hashed-bow`` embeddings.  Returns the built selector.
    """
    kind = "selector"
    check_class(cls, kind)
    label = _label(kind, cls)
    cfg = check_config(cls, options, kind=kind)
    with _step(label, f"building it with {cfg!r}"):
        sel = cls(cfg)
    data = data if data is not None else tiny_pairs(8, 2)
    host = contract_host(host)
    ctx = selector_context(data, TINY_SPEC, host, seed=seed)
    unique = bool(getattr(sel.config, "unique_images", False))
    most = data.num_images if unique else data.num_pairs
    budgets = budgets or sorted({1, most})
    images, text = data.images.clone(), data.text.clone()
    with use_host(host):
        for b in budgets:
            bctx = dataclasses.replace(ctx, budget=b, seed=seed)
            with _step(label, f"selecting {b} of {data.num_pairs} pairs (seed {seed})"):
                idx = _indices(sel.select(bctx), label)
                # determinism is checked at the largest budget (a fresh instance, the same seed)
                again = _indices(cls(cfg).select(bctx), label) if b == max(budgets) else idx
            _require(idx.numel() == b, label, f"a budget of {b} returned {idx.numel()} pairs")
            _require(idx.unique().numel() == b, label, f"a budget of {b} returned the same pair twice: {idx.tolist()}")
            _require(bool((idx >= 0).all() and (idx < data.num_pairs).all()), label,
                     f"indices outside 0..{data.num_pairs - 1}: {idx.tolist()}")
            if unique:
                _require(data.pair_image[idx].unique().numel() == b, label,
                         "unique_images is on but two captions of one image were selected")
            _require(idx.tolist() == again.tolist(), label,
                     f"the same seed gave other pairs ({idx.tolist()} vs {again.tolist()})")
        _require(torch.equal(data.images, images) and torch.equal(data.text, text), label,
                 "select() modified the training data")
        try:
            sel.select(dataclasses.replace(ctx, budget=data.num_pairs + 1, seed=seed))
        except VLError:
            pass
        except Exception as exc:
            raise ContractError(f"{label}: a budget above the {data.num_pairs} training pairs must raise a "
                                f"VLError (e.g. ConfigError) saying so, not {type(exc).__name__}: {exc}") from None
        else:
            raise ContractError(f"{label}: a budget above the number of training pairs did not raise")
    return sel


# ============================================================================= distillers
def _recipe_config(cls: type, label: str, cfg: Any) -> None:
    """The distiller's Config is a RecipeConfig, and it names an unroll backend exactly when it needs one."""
    from vlcore.components import RecipeConfig

    cfg_cls = cls.Config
    _require(issubclass(cfg_cls, RecipeConfig), label,
             "its Config must subclass vlcore.components.RecipeConfig (class Config(RecipeConfig): ...): the recipe "
             "loop reads pairs, iterations, checkpoint_every, eval_every and max_failures from it")
    hints = typing.get_type_hints(cfg_cls)
    bad = [f.name for f in dataclasses.fields(RecipeConfig) if hints.get(f.name) is not int]
    _require(not bad, label, f"Config fields {bad} of RecipeConfig must stay integers (the loop counts with them)")
    needs = getattr(cls, "needs_unroll", None)
    _require(isinstance(needs, bool), label, f"needs_unroll must be a bool class attribute (got {needs!r})")
    unroll = [f.name for f in dataclasses.fields(cfg_cls) if f.metadata.get("kind") == "unroll_backend"]
    if needs:
        _require(unroll, label, "needs_unroll is True but no Config field names an unroll backend (declare "
                                "unroll: str = field(default=\"func\", metadata={\"kind\": \"unroll_backend\"}))")
    else:
        _require(not unroll, label, f"needs_unroll is False but Config fields {unroll} name an unroll backend: their "
                                    f"flags would do nothing (set needs_unroll = True, or drop them)")
    with _step(label, f"building it with {cfg!r}"):
        hint = cls(cfg).failure_hint()
    _require(isinstance(hint, str) and hint.strip(), label,
             "failure_hint() must return the advice (a non-empty string) a run stopped by max_failures ends with")


def check_distiller(cls: type, options: dict | None = None, *, data=None, trainable: str | None = None,
                    seed: int = 0, host=None, workdir: str | Path | None = None) -> Any:
    """A distiller, ``distill(ctx)`` with a :class:`vlcore.components.DistillContext`:

    * its ``Config`` subclasses :class:`vlcore.components.RecipeConfig` (the loop's fields stay
      integers); ``needs_unroll`` is a bool, True exactly when a Config field names an unroll
      backend (metadata ``{"kind": "unroll_backend"}``); ``failure_hint()`` is a non-empty string;
    * returns a :class:`vlcore.pairset.PairSet` of finite float images at the buffer's image size and
      text embeddings of the text encoder's size, and saves it into ``ctx.out``;
    * records in ``meta``: kind ``distilled``, method (its name), its full config, seed and spec;
    * holds no run state: ``distill`` adds or replaces no attribute of the instance (what a run
      builds lives in its ``RunState``), and the same instance run again gives the same pair set;
    * with ``iterations`` >= 2: a run of one iteration fewer, resumed (``ctx.resume``) with all of
      them, gives exactly (bitwise) the uninterrupted run's pair set.

    It runs on a buffer of 2 tiny experts (``tiny-cnn``, 2 epochs) trained on ``data`` (default
    :func:`vlcore.testing.data.tiny_pairs`) in the mode ``trainable`` (default: the class's
    ``requires_trainable`` attribute, else ``full``).  ``options`` should make it small and fast
    (e.g. ``{"pairs": 4, "iterations": 2}``).  Returns the pair set.
    """
    from vlcore.components import DistillContext
    from vlcore.pairset import PairSet
    from vlcore.trajectories import ExpertConfig, train_experts

    kind = "distiller"
    check_class(cls, kind)
    label = _label(kind, cls)
    cfg = check_config(cls, options, kind=kind)
    _recipe_config(cls, label, cfg)
    data = data if data is not None else tiny_pairs(8, 2)
    host = contract_host(host)
    trainable = trainable or getattr(cls, "requires_trainable", None) or "full"
    spec = dataclasses.replace(TINY_SPEC, trainable=trainable,
                               image_head=getattr(cls, "requires_image_head", None) or TINY_SPEC.image_head)
    info = {"name": "tiny", "fingerprint": data.key}
    with contextlib.ExitStack() as stack:
        root = Path(workdir) if workdir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stack.enter_context(use_host(host))
        buf = train_experts(spec, data, ExpertConfig(num_experts=2, epochs=2, batch_size=8, lr=0.05),
                            root / "buffer", dataset_info=info)

        def distill(d, run: str, resume: bool = False):
            ctx = DistillContext(spec=spec, buffer=buf, train=data, out=root / run, eval_data=None,
                                 dataset_info=info, device="cpu", seed=seed, resume=resume, host=host)
            before = dict(vars(d))
            with _step(label, f"distilling with {d.config!r} (run {run})"):
                ps = d.distill(ctx)
            _require(isinstance(ps, PairSet), label, f"distill() must return a PairSet (got {type(ps).__name__})")
            after = vars(d)
            changed = sorted(k for k in set(after) | set(before)
                             if k not in after or k not in before or after[k] is not before[k])
            _require(not changed, label, f"distill() set {changed} on the distiller: keep what a run builds in its "
                                         f"RunState (state.runtime, a typed object setup makes), so one instance "
                                         f"can run again")
            with _step(label, f"loading the pair set it saved into {ctx.out}"):
                saved = PairSet.load(ctx.out)
            return ps, saved

        d = cls(cfg)
        ps, saved = distill(d, "a")
        other, _ = distill(d, "b")
        resumed = None
        if cfg.iterations >= 2:
            distill(cls(dataclasses.replace(cfg, iterations=cfg.iterations - 1)), "c")
            resumed, _ = distill(cls(cfg), "c", resume=True)
    n = len(ps)
    _require(n >= 1, label, "the pair set is empty")
    _require(ps.images.shape == (n, 3, spec.image_size, spec.image_size), label,
             f"images must be (N, 3, {spec.image_size}, {spec.image_size}), got {tuple(ps.images.shape)}")
    _require(ps.images.is_floating_point() and _finite(ps.images), label, "images must be finite floats")
    _require(ps.text.shape == (n, data.text.shape[1]) and _finite(ps.text), label,
             f"text must be finite ({n}, {data.text.shape[1]}) embeddings, got {tuple(ps.text.shape)}")
    _require(torch.equal(saved.images, ps.images.float()) and torch.equal(saved.text, ps.text.float()), label,
             "the pair set saved into ctx.out differs from the one returned")
    meta = saved.meta
    _require(meta.get("kind") == "distilled", label, f"meta['kind'] must be 'distilled' (got {meta.get('kind')!r})")
    _require(meta.get("method") == cls.name, label, f"meta['method'] must be {cls.name!r} (got {meta.get('method')!r})")
    _require(meta.get("config") == _config_json(cfg), label,
             "meta['config'] must record the full resolved config (dataclasses.asdict(self.config))")
    _require(meta.get("seed") == seed, label, f"meta['seed'] must record the seed {seed}")
    _require(isinstance(meta.get("spec"), dict), label, "meta['spec'] must record the model spec (spec.as_dict())")
    _require(len(other) == n and _close(other.images, ps.images, atol=1e-5) and _close(other.text, ps.text, atol=1e-5),
             label, "two runs with the same seed gave different pair sets")
    if resumed is not None:
        _require(torch.equal(resumed.images, ps.images) and torch.equal(resumed.text, ps.text)
                 and resumed.lr_img == ps.lr_img and resumed.lr_txt == ps.lr_txt, label,
                 f"a run of {cfg.iterations - 1} iterations resumed to {cfg.iterations} differs from an uninterrupted "
                 f"one: the checkpoint must hold the whole run state (learned tensors, optimisers, random streams)")
    return ps


# ============================================================================= evaluators
def check_evaluator(cls: type, options: dict | None = None, *, train=None, eval_data=None, host=None) -> dict:
    """An evaluator, ``evaluate(ctx)`` with a :class:`vlcore.components.EvalContext` (the pairs,
    the evaluation split, the spec, learned step sizes or None, device, host, progress):

    * returns a dict with the six recalls ``tr_r1 tr_r5 tr_r10 ir_r1 ir_r5 ir_r10`` as finite
      percentages in [0, 100] (and ``rsum``, if present, their sum);
    * gives the same numbers twice, and works with given step sizes too.

    ``train`` defaults to 8 tiny pairs (a pair set: one caption per image), ``eval_data`` to
    8 other images with 2 captions each; the model is ``tiny-cnn`` with ``hashed-bow``
    embeddings.  ``options`` should keep it fast (e.g. one seed, a few epochs).  Returns the metrics.
    """
    from vlcore.components import EvalContext
    from vlcore.metrics import KEYS

    kind = "evaluator"
    check_class(cls, kind)
    label = _label(kind, cls)
    cfg = check_config(cls, options, kind=kind)
    train = train if train is not None else tiny_pairs(8, 1, seed=0).select(torch.arange(8))
    eval_data = eval_data if eval_data is not None else tiny_pairs(8, 2, seed=1)
    host = contract_host(host)
    with use_host(host):
        runs = []
        for lr in (None, None, 0.05):
            ctx = EvalContext(train=train, eval_data=eval_data, spec=TINY_SPEC, lr_img=lr, lr_txt=lr, device="cpu",
                              host=host)
            with _step(label, f"evaluating with {cfg!r} (lr_img=lr_txt={lr})"):
                runs.append(cls(cfg).evaluate(ctx))
    m = runs[0]
    _require(isinstance(m, dict), label, f"evaluate() must return a dict (got {type(m).__name__})")
    for r in runs:
        for k in KEYS:
            v = r.get(k)
            _require(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= float(v) <= 100.0, label,
                     f"metric {k!r} must be a percentage in [0, 100] (got {v!r})")
        if "rsum" in r:
            _require(abs(float(r["rsum"]) - sum(float(r[k]) for k in KEYS)) < 1e-3, label,
                     "rsum must be the sum of the six recalls")
    _require(all(abs(float(runs[0][k]) - float(runs[1][k])) < 1e-6 for k in KEYS), label,
             "two evaluations of the same pairs gave different recalls")
    return m


# ============================================================================= unroll backends
def check_unroll_backend(cls: type, options: dict | None = None, *, host=None, rtol: float | None = 1e-3) -> Any:
    """An unroll backend, ``prepare(model) -> forward(params, **inputs)`` and
    ``run(unroll, wrt) -> UnrollResult``:

    * ``forward(params, images=..., text=...)`` with the model's own parameters equals the model's
      output, and with other parameters gives other outputs (they are substituted, not ignored);
      the frozen-backbone path ``forward(params, features=..., text=...)`` works too;
    * ``run`` of a three-step unroll gives the loss of the ``func`` reference (the whole graph) and
      finite gradients reaching the pixels (or features), the text embeddings and both step sizes,
      equal to the reference's within ``rtol`` when the backend declares itself ``exact`` (an
      approximate one, such as ``tesla``, is held to finite, non-zero gradients only);
    * the RNG state after ``run`` is the reference's (later draws are unaffected by the backend);
    * a LoRA (peft) model either works the same way or is refused with a :class:`VLError`.

    Returns the built backend.
    """
    from vlcore.pipeline import build_model
    from vlcore.unroll import FuncBackend, ParamLayout, Unroll, contrastive_step_loss

    kind = "unroll_backend"
    check_class(cls, kind)
    label = _label(kind, cls)
    backend = cls(check_config(cls, options, kind=kind))
    if not getattr(cls, "exact", True):
        rtol = None
    host = contract_host(host)
    text_dim = 32
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, TINY_SPEC.image_size, TINY_SPEC.image_size, generator=g)
    t = torch.randn(4, text_dim, generator=g)

    def run(b, trainable: str):
        spec = dataclasses.replace(TINY_SPEC, trainable=trainable)
        model = build_model(spec, text_dim, seed=0, host=host).eval()
        named = {n: p.detach().clone() for n, p in model.trainable_named().items()}
        layout = ParamLayout.of(named, {n: model.modality_of(n) for n in named})
        xi, ti = x.clone().requires_grad_(True), t.clone().requires_grad_(True)
        lr = {"img": torch.tensor(0.05, requires_grad=True), "txt": torch.tensor(0.05, requires_grad=True)}
        inputs = {"features": model.image_features(xi)} if model.frozen else {"images": xi}
        forward = b.prepare(model)
        out = forward(named, **inputs, text=ti)
        ref = model(**inputs, text=ti)
        shifted = forward({n: v + 0.5 for n, v in named.items()}, **inputs, text=ti)
        forward = b.prepare(model.train())  # the unroll runs in train mode (dropout), as distillation does
        start = layout.flatten(named)
        target = start + 0.01 * torch.randn(start.shape, generator=torch.Generator().manual_seed(1))
        batches = [torch.arange(4), torch.tensor([0, 2, 1, 3]), torch.tensor([3, 1, 2, 0])]
        u = Unroll(layout, start, target, lr, 3, contrastive_step_loss(forward, text=ti, batches=batches, **inputs))
        wrt = [next(iter(inputs.values())), ti, lr["img"], lr["txt"]]
        torch.manual_seed(7)
        result = b.run(u, wrt)
        after = torch.rand(1)
        grads = list(result.grads)
        if model.frozen:  # back to the pixels through the frozen backbone
            (grads[0],) = torch.autograd.grad(wrt[0], xi, grad_outputs=grads[0])
        return out, ref, shifted, result, grads, after

    with use_host(host):
        for trainable in ("full", "frozen"):
            with _step(label, f"unrolling a tiny {trainable} model"):
                out, ref, shifted, res, grads, after = run(backend, trainable)
                _, _, _, ref_res, ref_grads, ref_after = run(FuncBackend(), trainable)
            _require(isinstance(out, tuple) and len(out) == 2, label,
                     "forward(params, **inputs) must return (image embeddings, text embeddings)")
            _require(_close(out[0], ref[0]) and _close(out[1], ref[1]), label,
                     f"{trainable} model: forward with the model's own parameters differs from the model")
            _require(not _close(shifted[0], out[0], rtol=0, atol=1e-6), label,
                     f"{trainable} model: forward ignores the parameters it is given")
            _require(math.isfinite(res.loss) and abs(res.loss - ref_res.loss) <= 1e-4 * max(1.0, abs(ref_res.loss)),
                     label, f"{trainable} model: the trajectory loss differs from the func reference "
                            f"({res.loss:.6g} vs {ref_res.loss:.6g})")
            _require(torch.equal(after, ref_after), label,
                     f"{trainable} model: the RNG state after run() differs from the reference's")
            for what, gr, rg in zip(("pixels", "text embeddings", "image step size", "text step size"),
                                    grads, ref_grads):
                _require(gr is not None and _finite(gr) and gr.abs().sum() > 0, label,
                         f"{trainable} model: no gradient reaches the {what} through the unroll")
                if rtol is not None:
                    _require(_close(gr, rg, rtol=rtol, atol=1e-6), label,
                             f"{trainable} model: the gradient of the {what} differs from the func reference")
        try:
            out, ref, *_ = run(backend, "lora")
        except VLError:
            pass  # refusing a peft model with a clear message is allowed
        else:
            _require(_close(out[0], ref[0]) and _close(out[1], ref[1]), label,
                     "lora model: forward with the model's own parameters differs from the model")
    return backend


# ============================================================================= loggers
def check_logger(cls: type, options: dict | None = None, *, workdir: str | Path | None = None) -> Any:
    """A logger, ``start(run)``, ``log_scalars(step, scalars)``, ``log_image(step, tag, path)``,
    ``finish()``:

    * goes through a whole run (start, scalars at steps 1..3, a PNG figure, finish) without error,
      writing only inside the run folder it is given;
    * can start again on the same folder with ``resume=True`` (a resumed run) and finish again.

    ``options`` configure it (e.g. ``{"mode": "offline"}`` for a tracking service).  Returns the
    files it wrote, relative to the run folder.
    """
    from vlcore.loggers import LogRun

    kind = "logger"
    check_class(cls, kind)
    label = _label(kind, cls)
    cfg = check_config(cls, options, kind=kind)
    with contextlib.ExitStack() as stack:
        root = Path(workdir) if workdir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        out = root / "run"
        out.mkdir(parents=True, exist_ok=True)
        png = out / "grid.png"
        from PIL import Image

        Image.new("RGB", (8, 6), (200, 30, 30)).save(png)
        before = set(root.rglob("*"))
        for resume in (False, True):
            lg = cls(cfg)
            with _step(label, f"running a {'resumed' if resume else 'new'} run in {out}"):
                lg.start(LogRun(out=out, name="contract", config={"method": "test", "seed": 0}, resume=resume))
                for step in (1, 2, 3):
                    lg.log_scalars(step + 3 * resume, {"loss/total": 1.0 / step, "step_size/image": 0.01})
                lg.log_image(3 + 3 * resume, "grid", png)
                lg.finish()
        written = sorted(str(p.relative_to(out)) for p in set(root.rglob("*")) - before if p.is_file())
        outside = [str(p) for p in set(root.rglob("*")) - before if out not in p.parents and p != out]
        _require(not outside, label, f"wrote outside the run folder it was given: {outside[:3]}")
    return written


# ============================================================================= dispatch
def _checks() -> dict[str, Callable[..., Any]]:
    from vlcore.kinds import KINDS

    out = {}
    for name, kind in KINDS.items():
        module, _, attr = kind.contract.partition(":")
        if module != __name__:
            raise ValueError(f"the contract of kind {name!r} ({kind.contract}) is not in {__name__}")
        out[name] = globals()[attr]
    return out


#: kind -> its contract check (from :data:`vlcore.kinds.KINDS`)
CHECKS: dict[str, Callable[..., Any]] = _checks()


def check_component(kind: str, cls: type, options: dict | None = None, **kwargs) -> Any:
    """Run the contract of ``kind`` (``vl list`` kind names and aliases accepted) on ``cls``."""
    from vlcore.registry import normalise_kind

    return CHECKS[normalise_kind(kind)](cls, options, **kwargs)
