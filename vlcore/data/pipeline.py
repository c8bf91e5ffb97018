"""The data path, in one direction:

dataset -> frozen text encoder -> cached caption embeddings -> :class:`PairData` -> training /
distillation / selection -> pair set -> evaluation.

These helpers turn names and options into built components and cached tensors.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from vlcore.artifacts.io import atomic_path, cache_dir, fingerprint
from vlcore.core.errors import ConfigError, IncompatibleError
from vlcore.core.progress import NULL, Progress
from vlcore.core.registry import PluginHost, get_host
from vlcore.data.dataset import Dataset, Split, load_images, to_float
from vlcore.model.encoder import DualEncoder, ImageEncoder, ModelSpec
from vlcore.model.text import TextEncoder, embed_texts

log = logging.getLogger(__name__)


@dataclass
class PairData:
    """Images and caption embeddings; pair ``p`` is (images[pair_image[p]], text[p]).

    For a real split each image has several captions (several pairs); for a pair set
    ``pair_image`` is ``arange(N)``.  ``images`` is uint8 or float in [0, 1].
    """

    images: torch.Tensor
    text: torch.Tensor
    pair_image: torch.Tensor
    #: a string identifying the content, for feature caches (None: do not cache)
    key: str | None = None
    captions: list[str] | None = None
    split: Split | None = None
    #: (N, N) soft targets of a learned-similarity pair set (LoRS): trained on with the similarity
    #: loss instead of the contrastive one
    similarity: torch.Tensor | None = None

    @property
    def num_pairs(self) -> int:
        return int(self.text.shape[0])

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    def images_subset(self, image_idx) -> "PairData":
        """The images ``image_idx`` with all their captions (not cached: ``key`` is None)."""
        image_idx = torch.as_tensor(image_idx, dtype=torch.long)
        remap = torch.full((self.num_images,), -1, dtype=torch.long)
        remap[image_idx] = torch.arange(len(image_idx))
        keep = remap[self.pair_image] >= 0
        pairs = keep.nonzero().flatten()
        caps = [self.captions[i] for i in pairs.tolist()] if self.captions is not None else None
        return PairData(self.images[image_idx], self.text[pairs], remap[self.pair_image[pairs]], None, caps, None)

    def select(self, idx) -> "PairData":
        """The pairs ``idx`` as a pair set (one image per pair)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        caps = [self.captions[i] for i in idx.tolist()] if self.captions is not None else None
        return PairData(to_float(self.images[self.pair_image[idx]]), self.text[idx],
                        torch.arange(len(idx)), None, caps, None)

    def nearest_captions(self, text: torch.Tensor) -> tuple[list[str], list[float]]:
        """For each embedding of ``text`` (e.g. a distilled set's), the nearest caption of these pairs
        (cosine) and that cosine."""
        real = torch.nn.functional.normalize(self.text.float(), dim=-1)
        syn = torch.nn.functional.normalize(text.detach().float().cpu(), dim=-1)
        cos, nn_idx = (syn @ real.t()).max(dim=1)
        caps = self.captions or []
        return [caps[i] if caps else f"caption #{i}" for i in nn_idx.tolist()], [float(v) for v in cos]


def _host(host: PluginHost | None) -> PluginHost:
    return host or get_host()


def build_dataset(name: str, root: str | None = None, limit: int | None = None,
                  options: dict | None = None, host: PluginHost | None = None) -> Dataset:
    opts = dict(options or {})
    if root is not None:
        opts["root"] = root
    if limit is not None:
        opts["limit"] = limit
    return _host(host).create("dataset", name, opts)


_TEXT_ENCODERS: dict[str, TextEncoder] = {}


def build_text_encoder(spec: ModelSpec, host: PluginHost | None = None) -> TextEncoder:
    """The spec's text encoder; one instance per process and configuration (it is frozen)."""
    key = fingerprint(spec.text_encoder, spec.text_options)
    if key not in _TEXT_ENCODERS:
        _TEXT_ENCODERS[key] = _host(host).create("text_encoder", spec.text_encoder, spec.text_options)
    return _TEXT_ENCODERS[key]


def check_spec(spec: ModelSpec, host: PluginHost | None = None) -> None:
    """Refuse a spec no run can use, before any data work: unknown encoder names or options, an
    image size the encoder cannot take, weights that cannot be had (ConfigError, WeightsError)."""
    host = _host(host)
    cfg = host.config("image_encoder", spec.encoder, spec.encoder_options)
    host.config("text_encoder", spec.text_encoder, spec.text_options)
    cls = host.get("image_encoder", spec.encoder)
    cls.check_size(cfg, spec.image_size)
    cls.check_weights(cfg)


def build_backbone(spec: ModelSpec, host: PluginHost | None = None, seed: int = 0) -> ImageEncoder:
    """The spec's image encoder.  Any randomly initialised weights come from ``seed`` (a frozen
    backbone always uses seed 0, so its cached features are the same everywhere)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if spec.frozen else seed)
        try:
            return _host(host).create("image_encoder", spec.encoder, spec.encoder_options, image_size=spec.image_size)
        except ValueError as exc:  # an encoder's own check of its options: a user error, not a crash
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"image encoder '{spec.encoder}' at {spec.image_size} px: {exc}") from None


def build_model(spec: ModelSpec, text_dim: int, seed: int = 0, host: PluginHost | None = None,
                device: str | torch.device = "cpu") -> DualEncoder:
    """A fresh dual encoder: pretrained (or seeded random) backbone, seeded heads."""
    backbone = build_backbone(spec, host, seed)
    torch.manual_seed(seed)
    model = DualEncoder(backbone, text_dim, spec)
    return model.to(device)


def split_data(split: Split, spec: ModelSpec, text_encoder: TextEncoder, *, progress: Progress = NULL) -> PairData:
    """A real split as pair data: all images at the spec's size, every caption embedded."""
    images = load_images(split, spec.image_size, progress=progress)
    text = embed_texts(text_encoder, split.flat_captions(), progress=progress)
    return PairData(images, text, split.caption_image(),
                    key=fingerprint(split.fingerprint, spec.image_size),
                    captions=split.flat_captions(), split=split)


def backbone_key(spec: ModelSpec) -> str:
    return fingerprint(spec.encoder, spec.encoder_options, spec.image_size)


@torch.no_grad()
def compute_features(backbone: ImageEncoder, images: torch.Tensor, *, batch_size: int = 128,
                     device: str | torch.device = "cpu", progress: Progress = NULL) -> torch.Tensor:
    """Backbone features of ``images`` (eval mode, no gradient), on the CPU.

    The pass always runs in the default (contiguous) layout: a backbone whose weights are
    channels-last (a DualEncoder built with ``channels_last``) is converted for the pass and back
    afterwards, so the features of a backbone do not depend on how it was obtained (built, or taken
    from a model), and the on-disk cache holds one set whichever came first."""
    was_training = backbone.training
    was_channels_last = is_channels_last(backbone)
    if was_channels_last:
        backbone.to(memory_format=torch.contiguous_format)
    backbone.eval()
    out = []
    try:
        with progress.task("backbone features", images.shape[0], unit="img") as task:
            for s in range(0, images.shape[0], batch_size):
                x = to_float(images[s:s + batch_size]).to(device)
                out.append(backbone(x).float().cpu())
                task.update(x.shape[0])
    finally:
        backbone.train(was_training)
        if was_channels_last:
            backbone.to(memory_format=torch.channels_last)
    return torch.cat(out) if out else torch.empty(0, backbone.feature_dim)


def is_channels_last(module: torch.nn.Module) -> bool:
    """Whether ``module``'s convolution weights are in the channels-last layout (and not also
    contiguous, as 1x1 and single-channel kernels are in both)."""
    return any(p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
               for p in module.parameters())


def features_for(spec: ModelSpec, data: PairData, *, host: PluginHost | None = None, device="cpu",
                 progress: Progress = NULL, backbone: ImageEncoder | None = None) -> torch.Tensor | None:
    """The one answer to "features or images?": the (cached) backbone features of ``data`` when the
    spec's backbone is frozen (only the heads train on them), else None (the model reads pixels)."""
    if not spec.frozen:
        return None
    return image_features(spec, data, host=host, device=device, progress=progress, backbone=backbone)


def image_features(spec: ModelSpec, data: PairData, *, host: PluginHost | None = None, device="cpu",
                   progress: Progress = NULL, backbone: ImageEncoder | None = None,
                   seed: int = 0) -> torch.Tensor:
    """Backbone features of ``data.images`` through ``backbone`` (default: the spec's, built with
    ``seed``); cached on disk unless the weights are a random initialisation that depends on a seed
    (a frozen backbone is always built with seed 0, so its features are cached too)."""
    bb = backbone if backbone is not None else build_backbone(spec, host, seed)
    bb = bb.to(device)
    if bb.random_init(spec.encoder_options) and not spec.frozen:
        return compute_features(bb, data.images, device=device, progress=progress)
    return cached_features(spec, bb, data, device=device, progress=progress)


def cached_features(spec: ModelSpec, backbone: ImageEncoder, data: PairData, *, device="cpu",
                    progress: Progress = NULL) -> torch.Tensor:
    """Backbone features of ``data.images``, cached on disk when ``data.key`` is set (the cache is
    keyed by the spec: use it for pretrained or seed-0 frozen backbones only)."""
    from safetensors.torch import load_file, save_file

    if data.key is None:
        return compute_features(backbone, data.images, device=device, progress=progress)
    path = cache_dir() / "features" / f"{spec.encoder}-{fingerprint(backbone_key(spec), data.key)}.safetensors"
    if path.exists():
        try:
            feats = load_file(str(path))["features"]
            if feats.shape == (data.num_images, backbone.feature_dim):
                return feats
        except Exception:
            log.warning("ignoring unreadable cache file %s", path)
    feats = compute_features(backbone, data.images, device=device, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"features": feats.contiguous()}, str(tmp))
    return feats


def check_text_dim(where: str, got: int, text_encoder: TextEncoder, spec: ModelSpec) -> None:
    if got != text_encoder.dim:
        raise IncompatibleError(
            f"{where} holds {got}-d text embeddings but text encoder '{spec.text_encoder}' gives "
            f"{text_encoder.dim}-d ones. Use the text encoder the artifact was made with "
            f"(--text-encoder), or rebuild the artifact.")
