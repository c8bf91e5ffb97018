import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k-dev"


def pytest_configure(config):
    """Under pytest-xdist (the README's `-n auto`) the cores belong to the workers: torch, and every `vl`
    process a test starts (they inherit the environment), run one thread per worker, unless the
    environment says otherwise; N workers of N threads each on N cores run several times slower."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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


@pytest.fixture(scope="module")
def host():
    """A plugin host with the installed plugins, one per test module (a module may define its own)."""
    from vlcore.core.registry import PluginHost

    return PluginHost()


@pytest.fixture(scope="module")
def data(request, host):
    """``(train, dev)`` pair data of the ``embedded`` dataset (40 and 20 scenes) for the model
    ``SPEC`` of the test module (a module may define its own ``data``)."""
    from vlcore.testing.runs import embedded_splits

    return embedded_splits(request.module.SPEC, host)


@pytest.fixture
def offline(monkeypatch):
    """No test may wait on the network: the Hugging Face hub offline
    (``pytestmark = pytest.mark.usefixtures("offline")``)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def one_thread():
    """torch on one thread for the test (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def flickr8k_dir():
    if not (SHARED_DATA / "Flickr8k.token.txt").exists():
        pytest.skip(f"Flickr8k dev data not found at {SHARED_DATA} (expected ../shared beside the repo)")
    return SHARED_DATA
