"""Helpers shared by the command implementations: progress bars, loading data, metric tables."""
from __future__ import annotations

from pathlib import Path

import click

from vlcore.io import fingerprint
from vlcore.metrics import KEYS
from vlcore.model import ModelSpec
from vlcore.pipeline import PairData, build_dataset, build_text_encoder, split_data
from vlcore.progress import Progress, Task

from .options import DatasetOptions


class _TqdmTask(Task):
    def __init__(self, bar):
        self.bar = bar

    def update(self, n: int = 1, **postfix) -> None:
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


class TqdmProgress(Progress):
    """Progress bars on stderr (the library reports, the CLI draws)."""

    def task(self, desc: str, total: int | None = None, *, unit: str = "it", initial: int = 0) -> Task:
        import sys

        from tqdm.auto import tqdm

        # on a terminal, live bars; in a log file, a line every 30 s at most
        live = sys.stderr.isatty()
        return _TqdmTask(tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=not live,
                              mininterval=0.1 if live else 30.0))


BARS = TqdmProgress()


class ResumeNote(Progress):
    """``progress`` that, when the distillation loop starts (its task counts iterations), says on
    screen where a resumed run continues: ``resuming from iteration 40 of 60``."""

    def __init__(self, progress: Progress, checkpoint: Path):
        self.progress, self.checkpoint, self.said = progress, checkpoint, False

    def task(self, desc: str, total: int | None = None, *, unit: str = "it", initial: int = 0) -> Task:
        if unit == "it" and not self.said:
            self.said = True
            click.echo(f"resuming from iteration {initial} of {total} ({self.checkpoint})")
        return self.progress.task(desc, total, unit=unit, initial=initial)


def load_split_data(ds: DatasetOptions, split: str, spec: ModelSpec, *, progress: Progress = BARS,
                    check=None) -> PairData:
    """The pair data of ``split``.  ``check(split)``: called once the split is counted (its images and
    captions listed, none loaded or embedded yet), to refuse a run the split cannot take (e.g. more
    --pairs than it has) before the costly work."""
    dataset = build_dataset(ds.dataset, ds.data_dir, ds.limit, ds.options())
    part = dataset.split(split)
    if check is not None:
        check(part)
    return split_data(part, spec, build_text_encoder(spec), progress=progress)


def check_pairs(pairs: int, part, ds: DatasetOptions, who: str, *, unique_images: bool = False) -> None:
    """Refuse ``--pairs`` larger than the training split ``part`` holds (image-caption pairs, or images
    with ``unique_images``: one caption per image), naming the split's size and the flags that fix it;
    ``who``: the method."""
    from vlcore.errors import ConfigError

    have = part.num_images if unique_images else part.num_pairs
    if pairs <= have:
        return
    what = f"{ds.dataset}" + (f" in {ds.data_dir}" if ds.data_dir else "")
    size = f"{part.num_images} images with {part.num_pairs} captions"
    if unique_images:
        more = (f", or let several captions of one image in with --no-unique-images (up to --pairs {part.num_pairs})"
                if part.num_pairs > part.num_images else "")
        need = (f"exceeds the {part.num_images} images of the training split of {what} ({size}), and {who} takes one "
                f"caption per image (--unique-images, the default)")
    else:
        more = ""
        need = (f"exceeds the {part.num_pairs} pairs of the training split of {what} ({size}: a pair per caption), "
                f"from which {who} takes its pairs")
    opts = part.about.get("config") if isinstance(part.about, dict) else None
    grow = ""
    if isinstance(opts, dict) and {"dev", "test"} <= set(opts):
        grow = (f"; or move images into the training split (--dataset-option dev=N and test=N set the held-out "
                f"images: now dev={opts['dev']:g}, test={opts['test']:g})")
    elif isinstance(opts, dict) and "num_train" in opts:
        grow = f"; or make more training images (--dataset-option num_train=N, now {opts['num_train']})"
    elif ds.limit is not None:
        grow = f"; or raise --limit (now {ds.limit})"
    raise ConfigError(f"--pairs {pairs} {need}. Choose --pairs {have} or less{more}{grow}.")


def dataset_info(ds: DatasetOptions, data: PairData) -> dict:
    """The dataset record of an artifact made from the training split ``data``: what was asked for,
    the dataset's full resolved config (e.g. the sizes of a seeded split) and its licence."""
    about = data.split.about if data.split is not None else {}
    return {"name": ds.dataset, "root": str(Path(ds.data_dir).resolve()) if ds.data_dir else None,
            "options": ds.options(), "limit": ds.limit, "split": "train", "pairs": data.num_pairs,
            "images": data.num_images, "fingerprint": fingerprint(data.key), **about}


def default_out(method: str, encoder: str, pairs: int) -> Path:
    """The folder a run writes to when no --out is given: ``runs/METHOD-ENCODER-PAIRS``."""
    return Path("runs") / f"{method}-{encoder}-{pairs}"


def picked_defaults(ctx: click.Context, values: dict, notes: dict | None = None) -> dict:
    """The settings of ``values`` (parameter name -> the value the run uses) that the user did not
    give: printed on one line before any work, and returned for the artifact (meta["defaults"]).
    ``notes``: parameter name -> how its value was chosen, printed beside it (``--dataset captions
    (inferred from the layout of my-data: captions.csv)``)."""
    from .command import flag_key, was_given

    params = {p.name: p for p in ctx.command.get_params(ctx)}
    keys = {k: flag_key(params[k]) if k in params else k.replace("_", "-") for k in values}
    picked = {keys[k]: v for k, v in values.items() if v is not None and not (k in params and was_given(ctx, k))}
    said = {keys[k]: n for k, n in (notes or {}).items() if n and k in keys}
    if picked:
        click.echo(f"vl {ctx.command.name}: defaults used: " +
                   ", ".join(f"--{k} {v}" + (f" ({said[k]})" if k in said else "") for k, v in picked.items()) +
                   " (every setting: OUT/config.toml)")
    return picked


def warn_other_data(src: dict, info: dict) -> None:
    """Warn when an artifact (a buffer) was made from other training data than the run's."""
    if src.get("fingerprint") and src.get("fingerprint") != info["fingerprint"]:
        click.echo(f"warning: the buffer was trained on other data ({src.get('name')}, {src.get('pairs')} pairs) "
                   f"than the training split used now ({info['name']}, {info['pairs']} pairs).", err=True)


def metric_keys_json(m: dict) -> dict:
    """The public metrics object: means and stds of the six recalls (percent), plus rsum."""
    out = {k: round(m[k], 4) for k in KEYS}
    out.update({f"{k}_std": round(m.get(f"{k}_std", 0.0), 4) for k in KEYS})
    if "rsum" in m:
        out["rsum"] = round(m["rsum"], 4)
    if isinstance(m.get("candidates"), dict):  # what the recalls rank: beside them
        out["candidates"] = dict(m["candidates"])
    return out


def candidates_line(m: dict) -> str | None:
    """``evaluated on 500 images and 2,500 captions (IR ranks the images, TR the captions)``."""
    c = m.get("candidates")
    if not isinstance(c, dict):
        return None
    return (f"candidates: {c['images']:,} images and {c['captions']:,} captions (IR ranks the images, TR the "
            f"captions)")


#: what the columns of :func:`format_table` mean
LEGEND = ("TR: image->text retrieval, IR: text->image; R@K (TR@1 ...): % of queries whose match ranks in the top "
          "K; rsum: the sum of the six; ±: std over the evaluation seeds (models trained from scratch).")


def format_table(rows: list[tuple[str, dict]], *, std: bool = True) -> str:
    """A plain-text table: one row per (label, metrics)."""
    head = ["", "TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10", "rsum"]
    lines = []
    width = max([len(r[0]) for r in rows] + [4])
    for label, m in rows:
        cells = []
        for k in KEYS:
            s = f"{m[k]:.1f}"
            if std and f"{k}_std" in m:
                s += f"±{m[f'{k}_std']:.1f}"
            cells.append(s)
        cells.append(f"{m.get('rsum', sum(m[k] for k in KEYS)):.1f}")
        lines.append([label.ljust(width)] + cells)
    colw = [max(len(head[i]), *(len(l[i]) for l in lines)) for i in range(1, len(head))]
    out = ["  ".join([" " * width] + [h.rjust(w) for h, w in zip(head[1:], colw)])]
    for l in lines:
        out.append("  ".join([l[0]] + [c.rjust(w) for c, w in zip(l[1:], colw)]))
    return "\n".join(out)


def emit(metrics: dict, as_json: bool, label: str) -> None:
    if as_json:
        from .texts import print_json

        print_json(metric_keys_json(metrics))
    else:
        click.echo(format_table([(label, metrics)]))
        line = candidates_line(metrics)
        if line:
            click.echo(line)
        click.echo(LEGEND)


def claim_out(out, command: str, *, resume: bool = False, overwrite: bool = False, inputs=(), flag: str = "--out"):
    """Claim the output folder of this command (:class:`vlcore.outdir.OutputFolder`: checked, created,
    locked until the command ends); call ``.prepare()`` on the result right before writing."""
    from vlcore import distributed
    from vlcore.outdir import OutputFolder

    across = command in ACROSS_RANKS  # under torchrun: rank 0 claims the folder; the others follow its answer
    if across and not distributed.is_main():
        return click.get_current_context().with_resource(Follower(Path(out), command, distributed.broadcast()))
    folder = click.get_current_context().with_resource(
        OutputFolder(out, command, resume=resume, overwrite=overwrite, inputs=inputs, flag=flag))
    if across:
        if distributed.launched():
            folder.prepare()  # before another rank writes there (an --overwrite clears the folder now)
        distributed.broadcast(folder.resuming)
    return folder


#: the commands every rank runs under torchrun (the others run on rank 0 alone, inside `vl run`)
ACROSS_RANKS = ("experts", "distill", "run")


class Follower:
    """The output folder as a rank other than 0 sees it: claimed (checked, locked, prepared) by
    rank 0; what this rank writes there (its experts) is recorded in the folder's record too."""

    def __init__(self, path: Path, command: str, resuming: bool):
        from vlcore.io import FileRecord
        from vlcore.outdir import COMMAND_KINDS

        self.path, self.resuming = path, resuming
        self.record = FileRecord(path, {"command": command, "kind": COMMAND_KINDS[command]})

    def __enter__(self) -> "Follower":
        from vlcore.io import open_record

        open_record(self.record)
        return self

    def __exit__(self, *exc) -> None:
        from vlcore.io import close_record

        close_record(self.record)

    def prepare(self) -> Path:
        return self.path
