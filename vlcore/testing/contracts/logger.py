"""The contract of loggers: :func:`check_logger`."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from ._common import _begin, _require, _step, _workdir
from vlcore.artifacts.loggers import LogRun

def check_logger(cls: type, options: dict | None = None, *, workdir: str | Path | None = None) -> Any:
    """A logger, ``start(run)``, ``log_scalars(step, scalars)``, ``log_image(step, tag, path)``,
    ``finish()``:

    * goes through a whole run (start, scalars at steps 1..3, a PNG figure, finish) without error,
      writing only inside the run folder it is given;
    * can start again on the same folder with ``resume=True`` (a resumed run) and finish again.

    ``options`` configure it (e.g. ``{"mode": "offline"}`` for a tracking service).  Returns the
    files it wrote, relative to the run folder.
    """
    label, cfg = _begin(cls, "logger", options)
    with contextlib.ExitStack() as stack:
        root = _workdir(stack, workdir)
        out = root / "run"
        out.mkdir(parents=True, exist_ok=True)
        png = out / "grid.png"
        from PIL import Image

        Image.new("RGB", (8, 6), (200, 30, 30)).save(png)
        before = set(root.rglob("*"))
        for resume in (False, True):
            lg = cls(cfg)
            with _step(label, f"running a {'resumed' if resume else 'new'} run in {out}"):
                lg.start(LogRun(out=out, name="contract", config={"method": "test", "seed": 0}, resume=resume))
                for step in (1, 2, 3):
                    lg.log_scalars(step + 3 * resume, {"loss/total": 1.0 / step, "step_size/image": 0.01})
                lg.log_image(3 + 3 * resume, "grid", png)
                lg.finish()
        written = sorted(str(p.relative_to(out)) for p in set(root.rglob("*")) - before if p.is_file())
        outside = [str(p) for p in set(root.rglob("*")) - before if out not in p.parents and p != out]
        _require(not outside, label, f"wrote outside the run folder it was given: {outside[:3]}")
    return written


