"""vl-plugin-example: a third-party vlcore plugin.

It registers two components through vlcore's hooks, exactly as the bundled plugins do:

* the coreset selector ``medoid`` (``vl coreset --method medoid``), and
* the image encoder ``tinyresnet`` (``vl experts --encoder tinyresnet``, ``vl train``, ...).

The package is found through its entry point in the ``vlcore`` group (see pyproject.toml).
"""
from __future__ import annotations

from vlcore import hookimpl

from .medoid import MedoidSelector
from .tinyresnet import TinyResNet

__version__ = "0.1.0"
__all__ = ["MedoidSelector", "TinyResNet"]


@hookimpl
def register_selectors(register):
    register(MedoidSelector)


@hookimpl
def register_image_encoders(register):
    register(TinyResNet)
