"""Hugging Face hub availability, shared by the encoders that can download weights, and the optional
``datasets`` library (the ``hf`` dataset, ``vl export --format hf``)."""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse
from vlcore.core.errors import VLError


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """True when Hugging Face hub access is switched off by the environment."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return True
    try:
        import huggingface_hub.constants as hc
        return bool(hc.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the Hugging Face endpoint, so offline machines fail in seconds rather
    than after huggingface_hub's minute of retries."""
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def import_datasets(what: str):
    """The Hugging Face ``datasets`` library, or a VLError saying how to install it (``what`` needs it)."""
    try:
        import datasets
    except ImportError as exc:
        raise VLError(f"{what} needs the package datasets ({exc}). Install it with pip install 'vlcore[hf]'.") from None
    return datasets
