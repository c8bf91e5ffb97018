"""timm backbones: the shared :class:`TimmEncoder` (weights from a bundled package, the hub, a file
or a random init) and its variants: the NF family of the paper as a table, and the ViT used with
LoRA matching."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn

from vlcore.artifacts.hub import hub_offline, hub_reachable
from vlcore.core.errors import ImageSizeError, WeightsError, suggest
from vlcore.model.encoder import ImageEncoder

from .weights import hf_cached_file, load_state_dict_file, load_strict, offline_fix, pretrained_mode


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
        self.check_size(config, image_size)
        kwargs = self.create_kwargs(config, image_size)
        mode = pretrained_mode(config.pretrained)
        if mode == "auto" and self.has_bundled(config):
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

    @classmethod
    def model_of(cls, config) -> str:
        return (config.model or cls.default_model).strip()

    @classmethod
    def check_size(cls, config, image_size: int) -> None:
        reduction = 32
        if image_size < reduction:
            raise ImageSizeError(f"image encoder '{cls.name}' ({cls.model_of(config)}) downsamples by {reduction}: "
                                 f"image_size must be at least {reduction} (got {image_size}).")

    @classmethod
    def check_weights(cls, config) -> None:
        mode = pretrained_mode(config.pretrained)
        if mode == "path":
            if not Path(config.pretrained).expanduser().is_file():
                load_state_dict_file(config.pretrained)  # raises, saying what the option takes
        elif mode == "hub" or (mode == "auto" and not cls.has_bundled(config)):
            cls.hub_weights(cls.model_of(config))

    @classmethod
    def has_bundled(cls, config) -> bool:
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

    @classmethod
    def hub_weights(cls, model_name: str) -> tuple[str, str | None]:
        """(where the hub weights of ``model_name`` are, their file in the local cache or None when
        they must be downloaded); WeightsError saying how to fix it when they cannot be had."""
        _timm()
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(model_name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        url = getattr(cfg, "url", None) if cfg is not None else None
        if not hub_id and not url:
            raise WeightsError(
                f"timm has no pretrained weights for '{model_name}' (image encoder '{cls.name}'). "
                f"Pass --pretrained /path/to/weights.safetensors, or --pretrained none "
                f"(--encoder-option pretrained=none) for a random initialisation.")
        cached = hf_cached_file(hub_id, getattr(cfg, "hf_hub_filename", None)) if hub_id else None
        where = hub_id or url
        if cached is not None:
            return where, cached
        why = ("Hugging Face hub access is off (HF_HUB_OFFLINE) and they are not in the local cache" if hub_offline()
               else None if hub_reachable() else "no connection to the Hugging Face hub, and they are not in the "
                                                 "local cache")
        if why:
            raise WeightsError(f"The pretrained weights for image encoder '{cls.name}' ({model_name}, {where}) "
                               f"could not be downloaded: {why}. {offline_fix(model_name)}")
        return where, None

    def _create_from_hub(self, kwargs: dict) -> nn.Module:
        timm = _timm()
        where, cached = self.hub_weights(self.model_name)
        if cached is not None:
            model = timm.create_model(self.model_name, pretrained=True,
                                      pretrained_cfg_overlay={"file": cached}, **kwargs)
            self.weights_source = f"hub cache {cached}"
            return model
        try:
            model = timm.create_model(self.model_name, pretrained=True, **kwargs)
        except Exception as exc:
            raise WeightsError(
                f"The pretrained weights for image encoder '{self.name}' ({self.model_name}, {where}) "
                f"could not be downloaded ({type(exc).__name__}: {str(exc)[:300]}). "
                f"{offline_fix(self.model_name)}") from None
        self.weights_source = f"hub {where}"
        return model

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def extra_repr(self) -> str:
        return f"model={self.model_name}, weights={getattr(self, 'weights_source', '?')}"



#: the paper's NF backbones (REFERENCE.md, "Different vision encoders"): name -> (timm model, help)
NF_TABLE = {
    "nfnet": ("nfnet_l0", "NFNet-L0 (timm nfnet_l0, 2304-d), the published backbone; ImageNet weights from the timm hub."),
    "nf_resnet50": ("nf_resnet50", "NF-ResNet-50 (timm nf_resnet50, 2048-d); ImageNet weights from the timm hub."),
    "nf_regnet": ("nf_regnet_b1", "NF-RegNet-B1 (timm nf_regnet_b1, 960-d); ImageNet weights from the timm hub."),
}


def timm_variant(name: str, model: str, doc: str, base: type = None, *, cls_name: str | None = None,
                 module: str = __name__) -> type:
    """A registered encoder class for one timm architecture: ``name``, help ``doc``, and a Config
    whose ``model`` defaults to ``model``; a subclass of ``base`` (default :class:`TimmEncoder`, whose
    ``mean``/``std`` are ImageNet's) named ``cls_name`` (default: from ``name``) in ``module``, where
    it must be importable by that name (pickling)."""
    base = base or TimmEncoder
    config = dataclasses.make_dataclass("Config", [("model", str, dataclasses.field(default=model))],
                                        bases=(base.Config,), frozen=True)
    cls_name = cls_name or "".join(part.capitalize() for part in name.replace("-", "_").split("_"))
    cls = type(cls_name, (base,), {"__doc__": doc, "name": name, "default_model": model, "Config": config,
                                   "__module__": module})
    config.__qualname__ = f"{cls_name}.Config"
    config.__module__ = module
    return cls


NF_VARIANTS = tuple(timm_variant(name, model, doc) for name, (model, doc) in NF_TABLE.items())
globals().update({cls.__name__: cls for cls in NF_VARIANTS})  # importable (and picklable) by name


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

    @classmethod
    def check_size(cls, config, image_size: int) -> None:
        p = config.patch_size
        if p < 1:
            raise ImageSizeError(f"image encoder 'vit': patch_size must be positive (got {p}).")
        if image_size < p or image_size % p:
            raise ImageSizeError(
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

