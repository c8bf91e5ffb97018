"""Cross-architecture table (benchmarks/cross_arch.py): its cells, their commands and the log.

What the driver (``cross_arch.py``) runs and the report (``cross_arch_report.py``) reads: the rows and
evaluation backbones, the configuration, each cell's `vl` command and output folder, and the log of
finished cells (benchmarks/cross_arch.json) with the reference each cell is a share of."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import flickr8k as table  # noqa: E402  (the Flickr8k table driver: its rows, runs and commands)

RUNS = Path("runs") / "f8k-xarch"  # relative to ROOT, as the commands show it
IMAGE_SIZE = 112

#: evaluation backbone -> (what it is, the model flags of `vl eval` and `vl train`)
BACKBONES: dict[str, tuple[str, list[str]]] = {
    "effnet-lite0": ("EfficientNet-Lite0, frozen ImageNet (the sets' own)", ["--encoder", "effnet-lite0"]),
    "effnet-lite1": ("EfficientNet-Lite1, frozen ImageNet", ["--encoder", "effnet-lite1"]),
    "effnet-lite2": ("EfficientNet-Lite2, frozen ImageNet", ["--encoder", "effnet-lite2"]),
    # from scratch, all weights trained; a linear head to 256-d (with no head the joint space would be
    # the 12,544-d flattened feature map, and the text head 384 -> 12,544 -> 12,544)
    "convnet": ("ConvNet-3 (width 64) from scratch, linear head",
                ["--encoder", "convnet", "--trainable", "full", "--image-head", "linear"]),
}


#: what a backbone's column costs, where that decides whether it can run on this machine (measured
#: 2026-12-02 on the 2-core machine of FLICKR8K.md: ConvNet-3 forward + backward, one torch thread,
#: 0.09 s per 112-px image with the other core busy)
COST = {"convnet": "about 0.09 CPU-s per image and epoch (forward + backward at 112 px, one thread): the "
                   "full-data model is 30,000 pairs x up to 10 epochs x 3 seeds, about 20 CPU-hours, and a "
                   "cell 100 (or 1,000) pairs x 50 epochs x 3 seeds, about 0.4 (or 4) CPU-hours, so the "
                   "column is about 30 CPU-hours on this 2-core machine: a GPU's work (`--backbones convnet` "
                   "on a GPU machine; nothing else changes)"}


def default_rows() -> list[str]:
    """Each 100-pair row of the Flickr8k table and its 1000-pair coresets (its methods, as they land)."""
    return ([f"{m}-100" for m in table.DISTILLERS + table.CORESETS] + [f"{m}-1000" for m in table.CORESETS])


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def row_label(key: str, pairset: Path | None = None, log: dict | None = None) -> tuple[str, str]:
    """(label, pairs) of a row key such as ``lors-100``: the pairs its set holds, read from the set
    when it is there, else from a cell of the log that recorded them, else the key's budget."""
    method, _, n = key.rpartition("-")
    kept = [e["pairs"] for k, e in (log or {}).items() if k.startswith(f"{key}/") and e.get("pairs")]
    try:
        n = str(json.loads((pairset / "meta.json").read_text())["num_pairs"]) if pairset else str(kept[-1])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass
    kind = "distilled" if method in table.DISTILLERS else "coreset" if method in table.CORESETS else "set"
    return f"{method} ({kind})", n


@dataclass
class Config:
    rows: list[str]
    backbones: list[str]
    data: str = "../shared/data/flickr8k-dev"
    runs: Path = ROOT / RUNS
    #: evaluation seeds per cell (fresh models), as the Flickr8k table
    seeds: int = 3
    #: evaluation epochs (None: the evaluator's, 50, as the Flickr8k table)
    eval_epochs: int | None = None
    #: full-data models per backbone (seeds 0..n-1) and their epochs (the most; chosen on held-out images)
    full_seeds: int = 3
    full_epochs: int = 10
    #: --limit for every command (quick runs; None: the whole splits)
    limit: int | None = None
    #: row -> pair set folder, overriding where the Flickr8k table put it
    pairsets: dict[str, str] = field(default_factory=dict)
    make_sets: bool = False
    md: Path = HERE / "CROSS_ARCH.md"
    #: where the cells' results are kept (None: RUNS/log.json)
    log: Path | None = None
    png: Path = HERE / "cross_arch.png"


# ------------------------------------------------------------------------------------- commands
def rel(p: Path | str) -> str:
    p = Path(p)
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def shown(cmd: list[str]) -> str:
    return shlex.join(cmd).replace(str(ROOT) + "/", "").replace(str(ROOT.parent / "shared"), "../shared")


def pairset_path(cfg: Config, key: str) -> Path | None:
    """The row's pair set folder, or None when it has not been made."""
    if key in cfg.pairsets:
        p = Path(cfg.pairsets[key])
        p = p if p.is_absolute() else ROOT / p
        return p if (p / "meta.json").exists() else None
    return next((p for p in table_pairsets(key) if (p / "meta.json").exists()), None)


def make_set_command(cfg: Config, key: str) -> list[str]:
    # --rerun: the row may be in the table's results while its set is gone (runs/ is not kept)
    return [sys.executable, "benchmarks/flickr8k.py", "--only", key, "--exact", "--rerun", "--data", cfg.data]


def common_flags(cfg: Config) -> list[str]:
    return ["--data", cfg.data] + (["--limit", str(cfg.limit)] if cfg.limit else [])


def full_out(cfg: Config, backbone: str, seed: int) -> Path:
    return cfg.runs / f"full-{backbone}-{seed}"


def full_command(cfg: Config, backbone: str, seed: int) -> list[str]:
    return (["vl", "train", "--dataset", "flickr8k", *common_flags(cfg), *BACKBONES[backbone][1],
             "--text-encoder", "minilm", "--image-size", str(IMAGE_SIZE), "--eval-split", "dev",
             "--epochs", str(cfg.full_epochs), "--seed", str(seed)] +
            ["--out", rel(full_out(cfg, backbone, seed)), "--json"])


def eval_out(cfg: Config, key: str, backbone: str) -> Path:
    return cfg.runs / key / f"eval-{backbone}"


def eval_command(cfg: Config, key: str, backbone: str, pairset: Path) -> list[str]:
    return (["vl", "eval", rel(pairset), *common_flags(cfg), *BACKBONES[backbone][1], "--eval-split", "dev",
             "--eval-seeds", str(cfg.seeds)] +
            (["--eval-epochs", str(cfg.eval_epochs)] if cfg.eval_epochs else []) +
            ["--out", rel(eval_out(cfg, key, backbone)), "--json"])


class CellFailed(Exception):
    """A command that exited with an error (its message: the last lines it printed)."""


# ------------------------------------------------------------------------------------- the log
def log_path(cfg: Config) -> Path:
    return cfg.log or cfg.runs / "log.json"


def load_log(cfg: Config) -> dict:
    p = log_path(cfg)
    return json.loads(p.read_text()) if p.exists() else {}


def save_log(cfg: Config, log: dict) -> None:
    p = log_path(cfg)
    p.parent.mkdir(parents=True, exist_ok=True)
    log.update({k: v for k, v in load_log(cfg).items() if k not in log})  # cells another process kept meanwhile
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(log, indent=1, sort_keys=True))
    os.replace(tmp, p)


#: the fields of a Flickr8k-table entry that the run which made its set wrote (later annotations of the
#: entry, such as a storage count added afterwards, do not change which set it names)
RUN_FIELDS = ("command", "date", "machine", "wall_s", "cpu_s")
_TABLE_LOG: dict = {}  # the Flickr8k table's log as last read: {"stamp": (path, mtime, size), "log": {...}}


def table_entry(key: str) -> dict | None:
    """The Flickr8k table's entry for the row, read again only when its file changed."""
    if not table.LOG.exists():
        return None
    st = table.LOG.stat()
    stamp = (str(table.LOG), st.st_mtime_ns, st.st_size)
    if _TABLE_LOG.get("stamp") != stamp:
        _TABLE_LOG.update(stamp=stamp, log=json.loads(table.LOG.read_text()))
    return _TABLE_LOG["log"].get(key)


def set_id(cfg: Config, key: str, pairset: Path | None) -> str | None:
    """Which run made the row's pair set: a digest of the run's fields of the Flickr8k table's entry
    for the row (RUN_FIELDS: a rerun of the row changes them), or for a set named with --pairset (or
    one the table has no entry for), of its meta.json (None: no such set). A cell evaluated on
    another set is not done: rerunning a row of the table makes its cells stale."""
    entry = table_entry(key) if key not in cfg.pairsets else None
    if entry:
        made = json.dumps({k: entry.get(k) for k in RUN_FIELDS}, sort_keys=True).encode()
    elif pairset is not None:
        made = (pairset / "meta.json").read_bytes()
    else:
        return None
    return hashlib.sha256(made).hexdigest()[:16]


def table_pairsets(key: str) -> list[Path]:
    """Where the Flickr8k table puts the row's set (its distiller's or its coreset's stage)."""
    return [ROOT / table.RUNS / key / stage for stage in ("distilled", "coreset")]


def done(entry: dict | None, cmd: list[str], made_by: str | None = None) -> bool:
    """The log's entry holds results of this command (on the set ``made_by`` names, for a row's cell)."""
    return (bool(entry) and "metrics" in entry and entry.get("command") == shown(cmd)
            and (made_by is None or entry.get("set") == made_by))


# ------------------------------------------------------------------------------------- results
def reference(cfg: Config, log: dict, backbone: str) -> dict | None:
    """Mean TR@1 / IR@1 of the backbone's full-data models (the seeds done with this config)."""
    runs = [e["metrics"] for s in range(cfg.full_seeds)
            if done(e := log.get(f"full/{backbone}/{s}"), full_command(cfg, backbone, s))]
    if not runs:
        return None
    return {k: sum(r[k] for r in runs) / len(runs) for k in ("tr_r1", "ir_r1")} | {"seeds": len(runs)}


def cell_state(cfg: Config, log: dict, key: str, backbone: str) -> tuple[str, dict | None]:
    """("done", entry) / ("failed", entry) / ("missing", None: no pair set) / ("todo", None).

    A cell done on the set that the table's current entry for the row made stays done when that set
    is gone (runs/ is not kept, the committed log is): its result does not need the set again."""
    ps = pairset_path(cfg, key)
    e = log.get(f"{key}/{backbone}")
    sid = set_id(cfg, key, ps)
    if ps is None:
        if key not in cfg.pairsets and sid is not None and any(
                done(e, eval_command(cfg, key, backbone, p), sid) for p in table_pairsets(key)):
            return "done", e
        return "missing", None
    cmd = eval_command(cfg, key, backbone, ps)
    if done(e, cmd, sid):
        return "done", e
    if e and e.get("command") == shown(cmd) and e.get("set") == sid and "error" in e:
        return "failed", e
    return "todo", None


def share(value: float, ref: float | None) -> float:
    return 100.0 * value / ref if ref else math.nan
