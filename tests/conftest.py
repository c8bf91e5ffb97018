import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k-dev"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Tests use their own cache folder (caption embeddings, image tensors, features)."""
    old = os.environ.get("VL_CACHE_DIR")
    os.environ["VL_CACHE_DIR"] = str(tmp_path_factory.mktemp("vlcache"))
    yield
    if old is None:
        os.environ.pop("VL_CACHE_DIR", None)
    else:
        os.environ["VL_CACHE_DIR"] = old


@pytest.fixture
def flickr8k_dir():
    if not (SHARED_DATA / "Flickr8k.token.txt").exists():
        pytest.skip(f"Flickr8k dev data not found at {SHARED_DATA} (expected ../shared beside the repo)")
    return SHARED_DATA
