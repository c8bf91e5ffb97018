"""Run the ``vl`` command in a subprocess, as a user would (installed entry points, a fresh process),
or in this process (:func:`invoke_vl`); :func:`refused_cleanly` checks a refusal."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping
from vlcore.cli.main import cli


def vl_command() -> list[str]:
    """The ``vl`` console script of this Python environment (or an equivalent ``python -c``)."""
    script = Path(sys.executable).parent / ("vl.exe" if os.name == "nt" else "vl")
    if script.exists():
        return [str(script)]
    found = shutil.which("vl")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from vlcore.cli.main import main; main(sys.argv[1:])"]


def run_vl(*args: str, env: Mapping[str, str | None] | None = None, cwd: str | os.PathLike | None = None,
           timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``vl ARGS`` and return the completed process (text stdout/stderr).

    ``env`` is added to the current environment (a ``None`` value removes the variable); torch
    in the subprocess uses as many threads as in this process unless ``OMP_NUM_THREADS`` is set.
    With ``check``, a non-zero exit raises an AssertionError showing the command's output.
    """
    full = dict(os.environ)
    try:
        import torch
        full.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    except Exception:  # pragma: no cover
        pass
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    proc = subprocess.run(vl_command() + [str(a) for a in args], env=full, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"`vl {' '.join(map(str, args))}` exited with {proc.returncode}\n"
                             f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")
    return proc


def invoke_vl(*args, ok: bool = True):
    """Run ``vl ARGS`` in this process (click's CliRunner: fast, and plugins registered by the test
    are seen); with ``ok``, a non-zero exit fails the test showing the output.  Returns click's
    Result (``output``: stdout and stderr, ``stdout``: stdout only, ``exit_code``)."""
    from click.testing import CliRunner

    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, res.output
    return res


def refused_cleanly(res, code: int = 2, fragments: Iterable[str] = ()) -> str:
    """Check that the in-process run ``res`` (``invoke_vl(..., ok=False)``) was refused the way
    ``vl`` refuses: exit status ``code`` (2: a usage error), no traceback, and each of ``fragments``
    in its output (white space folded in both).  Returns the output with its white space folded."""
    text = " ".join(res.output.split())
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output, res.output
    for fragment in fragments:
        assert " ".join(fragment.split()) in text, (fragment, res.output)
    return text
