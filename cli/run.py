"""``vl run RECIPE``: run the stages of a recipe file in order, with resume (:mod:`vlcore.experiment`)."""
from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import click

from vlcore.errors import ConfigError, VLError, suggest
from vlcore.experiment import Experiment, Stage, load, override
from vlcore.io import read_json, write_json, write_text
from vlcore.outdir import COMMAND_KINDS, RESUMABLE, STAGE_RECORD, describe

from .app import cli
from .command import config_keys, flag_key
from .common import LEGEND, claim_out, format_table, metric_keys_json
from .options import eval_split_option, handle_errors, resolve_device

#: the commands a stage may run
STAGE_COMMANDS = ("experts", "distill", "coreset", "eval", "train")
RECORD = STAGE_RECORD


def _command(stage: Stage, source: str) -> click.Command:
    if stage.command not in STAGE_COMMANDS:
        raise ConfigError(f"{source}: stage '{stage.name}' runs '{stage.command}', which is not a stage command."
                          f"{suggest(stage.command, STAGE_COMMANDS)} Use one of {', '.join(STAGE_COMMANDS)}.")
    return cli.commands[stage.command]


def _params(cmd: click.Command, settings: dict[str, Any]) -> dict[str, click.Parameter]:
    """The keys a stage of ``cmd`` may set (flag or parameter names, underscores for dashes) ->
    parameter; the flags of the component the settings choose included."""
    ctx = cmd.make_context(cmd.name, [], resilient_parsing=True)
    comp = getattr(cmd, "component", None)
    if comp is not None:
        name = settings.get(comp.param, comp.default)
        if name:
            from vlcore.registry import get_host

            get_host().get(comp.kind, str(name))  # an unknown name fails here, with a suggestion
            ctx.meta["vl.component"] = str(name)
    return config_keys(cmd.get_params(ctx))


def stage_folder(exp: Experiment, stage: Stage, out: Path) -> Path:
    """Where ``stage`` writes: OUT/NAME, or the stage's own ``out`` setting (which lets several
    experiments share, say, one expert buffer)."""
    own = stage.settings.get("out")
    return Path(own) if own else out / stage.name


def stage_argv(exp: Experiment, stage: Stage, out: Path, device: str | None) -> list[str]:
    """The command line of ``stage``: the common keys its command has, then its own settings,
    ``@NAME`` references resolved to that stage's folder, and ``--out`` its own folder."""
    cmd = _command(stage, exp.source)
    own = {k.replace("-", "_"): v for k, v in stage.settings.items()}
    keys = _params(cmd, own)
    values: dict[str, Any] = {}
    for k, v in exp.common.items():
        if k.replace("-", "_") in keys:
            values[keys[k.replace("-", "_")].name] = v
    for k, v in own.items():
        if k not in keys:
            raise ConfigError(f"{exp.source}: stage '{stage.name}' (vl {stage.command}) has no setting "
                              f"'{k.replace('_', '-')}'.{suggest(k, keys)} See `vl {stage.command} --help`.")
        values[keys[k].name] = v
    params = {p.name: p for p in keys.values()}
    if device is not None and "device" in params:
        values["device"] = device
    values["out"] = str(stage_folder(exp, stage, out))
    positional, argv = [], []
    for key, value in values.items():
        if isinstance(value, str) and value.startswith("@"):
            value = str(stage_folder(exp, exp.stage(value[1:]), out))
        p = params[key]
        if isinstance(p, click.Argument):
            positional.append(str(value))
            continue
        flag = "--" + flag_key(p)
        if p.is_flag and not p.secondary_opts:
            if value:
                argv.append(flag)
        elif isinstance(value, bool):
            argv.append(p.opts[0] if value else p.secondary_opts[0])
        elif isinstance(value, list):
            for v in value:
                argv += [flag, str(v)]
        else:
            argv += [flag, str(value)]
    return positional + argv


def same_stage(record: dict, argv: list[str], out: Path, command: str) -> bool:
    """Whether a stage record was made by the command line ``argv``, wherever the experiment folder
    was then (a copied or moved folder is reused) and with old spellings of flags read as today's."""
    from .command import alias_map

    def canonical(args: list[str], root: str) -> list[str]:
        renamed = alias_map(cli.commands[command].get_params(cli.commands[command].make_context(
            command, [], resilient_parsing=True))) if command in cli.commands else {}
        prefix = root.rstrip("/") + "/"
        return [renamed.get(a, "@OUT/" + a[len(prefix):] if a.startswith(prefix) else a) for a in args]

    old = record.get("argv") or []
    return canonical(old, record.get("out", str(out))) == canonical(argv, str(out))


def _stage_start(exp: Experiment, stage: Stage, argv: list[str], out: Path, folder: Path, i: int, n: int, line: str,
                 echo) -> list[str] | None:
    """Check a stage's folder and record its start; the extra flags it runs with (``--resume`` or
    ``--overwrite`` for its own unfinished artifact), or None when it finished earlier."""
    record = folder / RECORD
    if record.exists():
        rec = read_json(record)
        if not same_stage(rec, argv, out, stage.command):
            raise VLError(f"{folder} was made by other settings than this recipe's stage '{stage.name}' now "
                          f"asks for (it ran `{' '.join(['vl', rec.get('command', '?'), *rec.get('argv', [])])}`). "
                          f"Choose another --out, or delete {folder} to run the stage again.")
        if rec.get("done"):
            echo(f"[{i}/{n}] {stage.name}: done earlier, reused ({folder})")
            return None
    echo(f"[{i}/{n}] {stage.name}: {line}")
    extra = []
    found = describe(folder)
    if not record.exists() and not found.empty:
        raise VLError(f"{folder} holds {found.what}, which this recipe's stage '{stage.name}' did not make. "
                      f"Choose another --out, or move {folder} away.")
    if record.exists() and found.kind == COMMAND_KINDS[stage.command]:  # this stage's unfinished artifact
        extra = ["--resume"] if found.kind in RESUMABLE else ["--overwrite"]
    folder.mkdir(parents=True, exist_ok=True)
    write_json(record, {"command": stage.command, "argv": argv, "out": str(out), "done": False})
    return extra


def run_experiment(exp: Experiment, out: Path, *, device: str | None = None, echo=click.echo) -> dict[str, dict]:
    """Run every stage of ``exp`` into ``out`` (a finished stage is reused; an interrupted one
    resumes: ``--resume`` for experts and distill stages, ``--overwrite`` for the others, and only
    in a folder holding that stage's own artifact); return the metrics of its eval stages by stage
    name.  The caller claims ``out`` (:func:`vlcore.cli.common.claim_out`)."""
    from vlcore import distributed

    plans = [(s, stage_argv(exp, s, out, device)) for s in exp.stages]  # every stage checked before any runs
    main = distributed.is_main()  # under torchrun: rank 0 decides and records; all ranks run experts and distill
    if main:
        out.mkdir(parents=True, exist_ok=True)
    n = len(plans)
    for i, (stage, argv) in enumerate(plans, 1):
        folder = stage_folder(exp, stage, out)
        record = folder / RECORD
        line = f"vl {stage.command} {shlex.join(argv)}"
        extra = _stage_start(exp, stage, argv, out, folder, i, n, line, echo) if main else None
        extra = distributed.broadcast(extra)  # None: done earlier
        if extra is None:
            continue
        t0 = time.time()
        cmd = cli.commands[stage.command]
        if main or stage.command in ("experts", "distill"):
            try:
                cmd.main(args=argv + extra, prog_name=f"vl {stage.command}", standalone_mode=False)
            except click.ClickException as exc:
                raise VLError(f"stage '{stage.name}' of {exp.source} failed: {exc.format_message()}\n"
                              f"(it ran: {line})") from None
        distributed.barrier()  # every rank is done with the stage
        if main:
            write_json(record, {"command": stage.command, "argv": argv, "out": str(out), "done": True,
                                "seconds": round(time.time() - t0, 1)})
    if not main:
        return {}
    return {s.name: read_json(stage_folder(exp, s, out) / "details.json") for s, _ in plans if s.command == "eval"}


def report(results: dict[str, dict], out: Path, labels: dict[str, str] | None = None,
           title: str = "retrieval") -> str:
    """Write OUT/results.json, results.md and recall.png for the eval stages; return the table."""
    from vlcore.viz import recall_curves

    labels = labels or {}
    rows = [(labels.get(k, k), m) for k, m in results.items()]
    table = format_table(rows)
    write_json(out / "results.json", {labels.get(k, k): {**metric_keys_json(m), "lr_img": m.get("lr_img"),
                                                          "lr_txt": m.get("lr_txt"), "storage": m.get("storage")}
                                      for k, m in results.items()})
    write_text(out / "results.md", f"{title}: retrieval (%), mean±std over seeds of models trained from scratch "
                                    f"on each set. {LEGEND}\n\n```\n{table}\n```\n")
    curves = {labels.get(k, k): m["curve"] for k, m in results.items() if "curve" in m}
    if curves:
        recall_curves(curves, out / "recall.png", title=title)
    return table


@cli.command("run")
@click.argument("recipe")
@click.option("--out", type=click.Path(file_okay=False), default=None, show_default="runs/RECIPE-NAME",
              help="Folder of the experiment: each stage writes OUT/STAGE.")
@click.option("--data", "data_dir", type=click.Path(), default=None, show_default="the recipe's",
              help="Dataset folder for every stage (overrides the recipe's).")
@eval_split_option("split", default=None, show_default="the recipe's",
                   help="Evaluation split of the eval stages (never tune on test).")
@click.option("--set", "sets", multiple=True, metavar="STAGE.KEY=VALUE",
              help="Override one setting (repeatable), e.g. --set distilled.pairs=200 or --set common.limit=50.")
@click.option("--device", default=None, show_default="the recipe's",
              help="Torch device for every stage: cpu, cuda, cuda:1, mps, or auto.")
@click.option("--dry-run", is_flag=True, help="Print each stage's command line and stop.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the evaluation's metrics as JSON (the keys of `vl eval --json`; one object per eval "
                   "stage, by name, when there are several).")
@handle_errors
def run_cmd(recipe, out, data_dir, split, sets, device, dry_run, as_json, config):
    """Run the experiment RECIPE (a recipe file, or `demo`): its stages in order, each writing its
    artifact under --out.  A finished stage is reused and an interrupted one resumes, so the same
    command continues a run.

    A recipe names its stages (experts, distill or coreset, eval, train) with their settings; see
    recipes/ in the source tree and `vlcore.experiment` for the format.
    """
    exp = load(recipe)
    if data_dir is not None:
        exp.common["data"] = data_dir
    if split is not None:
        for s in exp.stages:
            if s.command == "eval":
                s.settings.pop("split", None)
                s.settings["eval-split"] = split
    for assignment in sets:
        override(exp, assignment)
    out = Path(out or Path("runs") / Path(exp.source).stem)
    if dry_run:
        for s in exp.stages:
            click.echo(f"vl {s.command} {shlex.join(stage_argv(exp, s, out, device))}")
        return
    from vlcore import distributed

    echo = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    if distributed.launched():  # torchrun: the experts and distill stages run across the ranks
        resolve_device(device or str(exp.common.get("device", "cpu")), distributed=True)
    claim_out(out, "run", resume=True).prepare()
    results = run_experiment(exp, out, device=device, echo=echo)
    if not results:
        return
    table = report(results, out, title=exp.description or Path(exp.source).stem)
    if as_json:
        pub = {k: metric_keys_json(m) for k, m in results.items()}
        click.echo(json.dumps(next(iter(pub.values())) if len(pub) == 1 else pub))
    else:
        click.echo("")
        click.echo(table)
        click.echo(LEGEND)
        click.echo(f"\nwrote {out}/results.md, results.json, recall.png")
