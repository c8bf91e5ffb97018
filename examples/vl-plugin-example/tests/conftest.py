"""The example plugin's tests use vlcore's test kit, as any third-party plugin's would."""
import sys
from pathlib import Path

import pytest
import torch

try:
    import vl_plugin_example  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`: the unit tests still run
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

pytest_plugins = ["vlcore.testing.fixtures"]



@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread (also for `vl` subprocesses, see vlcore.testing.cli.run_vl): tiny models
    gain nothing from more, and on a busy machine two spinning OpenMP threads can be 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
