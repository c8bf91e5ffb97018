"""``vl run RECIPE``: run the stages of a recipe file in order, with resume (:mod:`vlcore.artifacts.experiment`)."""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import click

from vlcore.artifacts.experiment import Experiment, Stage, load, override
from vlcore.artifacts.io import RECORD_NAME, read_json, record_for, write_json, write_text
from vlcore.artifacts.outdir import COMMAND_KINDS, RESUMABLE, STAGE_RECORD, describe
from vlcore.choices import refuse_ignored_folder
from vlcore.core.errors import ConfigError, OutputError, VLError, suggest
from vlcore.core.registry import get_host
from vlcore.data.viz import recall_curves
from vlcore.requests import public_metrics
from vlcore.training import distributed

from .app import cli

from .common import LEGEND, candidates_line, claim_out, format_table
from .options import eval_split_option, handle_errors, resolve_device
from .params import alias_map, config_keys, flag_key
from .texts import print_json

#: the commands a stage may run
STAGE_COMMANDS = ("experts", "distill", "coreset", "eval", "train")
RECORD = STAGE_RECORD


class StageError(VLError):
    """A stage's command failed; the exit status is the command's own (2 for a usage error)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


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
            get_host().get(comp.kind, str(name))  # an unknown name fails here, with a suggestion
            ctx.meta["vl.component"] = str(name)
    return config_keys(cmd.get_params(ctx))


def stage_folder(exp: Experiment, stage: Stage, out: Path) -> Path:
    """Where ``stage`` writes: OUT/NAME (NAME is a plain folder name, :func:`vlcore.artifacts.experiment.load`
    checks it), or the stage's own ``out`` setting, given explicitly (which lets several experiments
    share, say, one expert buffer): in a recipe file relative to that file's folder (``load`` has
    made it absolute), with ``--set NAME.out=PATH`` relative to the current folder."""
    own = stage.settings.get("out")
    return Path(own) if own else out / stage.name


def _stage_keys(exp: Experiment, stage: Stage) -> tuple[click.Command, dict[str, Any], dict[str, click.Parameter]]:
    cmd = _command(stage, exp.source)
    own = {k.replace("-", "_"): v for k, v in stage.settings.items()}
    return cmd, own, _params(cmd, own)


def check_common(exp: Experiment) -> None:
    """Every key of [common] (and ``--set common.KEY=...``) is a setting of at least one stage's
    command (it is given to the stages whose command has it); one that none has is an error, with
    the closest key of those commands suggested."""
    known: dict[str, click.Parameter] = {}
    for stage in exp.stages:
        known.update(_stage_keys(exp, stage)[2])
    known.pop("out", None)  # each stage's --out is its own folder
    commands = ", ".join(dict.fromkeys(f"vl {s.command}" for s in exp.stages))
    for k in exp.common:
        key = k.replace("-", "_")
        if key == "out":
            raise ConfigError(f"{exp.origin('common', k)}: 'out' cannot be common: each stage writes its own folder, "
                              f"OUT/NAME. Give the experiment's folder with `vl run --out`, or one stage's with "
                              f"out = \"PATH\" in its [stages.NAME] table.")
        if key not in known:
            names = {flag_key(p) for p in known.values()}
            raise ConfigError(f"{exp.origin('common', k)}: '{k}' is a setting of none of this recipe's stage commands "
                              f"({commands}).{suggest(k.replace('_', '-'), names)} A [common] key is given to every "
                              f"stage whose command has it; see `vl COMMAND --help` for the keys.")


def stage_values(exp: Experiment, stage: Stage, out: Path,
                 device: str | None) -> tuple[dict[str, click.Parameter], dict[str, Any]]:
    """The settings of ``stage`` by parameter of its command (parameter name -> parameter, and ->
    value): the common keys its command has, then its own settings, ``@NAME`` references resolved to
    that stage's folder, and ``out`` its own folder."""
    cmd, own, keys = _stage_keys(exp, stage)
    values: dict[str, Any] = {}
    for k, v in exp.common.items():
        if k.replace("-", "_") in keys and k.replace("-", "_") != "out":
            values[keys[k.replace("-", "_")].name] = v
    for k, v in own.items():
        if k not in keys:
            raise ConfigError(f"{exp.origin(stage.name, k)}: stage '{stage.name}' (vl {stage.command}) has no setting "
                              f"'{k.replace('_', '-')}'.{suggest(k, keys)} See `vl {stage.command} --help`.")
        values[keys[k].name] = v
    params = {p.name: p for p in keys.values()}
    if device is not None and "device" in params:
        values["device"] = device
    values["out"] = str(stage_folder(exp, stage, out))
    for key, value in values.items():
        if isinstance(value, str) and value.startswith("@"):
            values[key] = str(stage_folder(exp, exp.stage(value[1:]), out))
    return params, values


def given_values(params: dict[str, click.Parameter], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as a command line gives them to their parameters: text, a list of texts for a
    repeatable option, a bool for a flag (never a bool or a number read as another type)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        p = params[key]
        if isinstance(p, click.Option) and p.is_flag and not p.secondary_opts:
            if value:
                out[key] = True
        elif isinstance(p, click.Option) and p.is_flag and isinstance(value, bool):
            out[key] = value
        elif isinstance(value, list):
            out[key] = [str(v) for v in value]
        else:
            out[key] = str(value)
    return out


def stage_argv(exp: Experiment, stage: Stage, out: Path, device: str | None) -> list[str]:
    """The command line a user could type for ``stage`` (what --dry-run prints, what a stage record
    keeps to recognise the stage, what its messages show); the stage itself runs from its values
    (:func:`stage_context`), never from this line."""
    params, values = stage_values(exp, stage, out, device)
    positional, argv = [], []
    for key, value in given_values(params, values).items():
        p = params[key]
        if isinstance(p, click.Argument):
            positional.append(value)
            continue
        flag = "--" + flag_key(p)
        if p.is_flag and not p.secondary_opts:
            argv.append(flag)
        elif isinstance(value, bool):
            argv.append(p.opts[0] if value else p.secondary_opts[0])
        elif isinstance(value, list):
            for v in value:
                argv += [flag, v]
        else:
            argv += [flag, value]
    return positional + argv


def stage_context(exp: Experiment, stage: Stage, out: Path, device: str | None,
                  extra: dict[str, Any] | None = None) -> click.Context:
    """The context ``stage``'s command runs in, made from the stage's values (and ``extra`` ones, e.g.
    ``resume``) as its command line would make it: the types and ranges of every value, ``--set``
    ones included, are checked, a bad value is a usage error (exit 2) naming the stage and the
    setting that gave it."""
    params, values = stage_values(exp, stage, out, device)
    cmd = cli.commands[stage.command]
    try:
        return cmd.context_for(given_values(params, {**values, **(extra or {})}), f"vl {stage.command}")
    except click.UsageError as exc:
        where = "the recipe or the --set that gives the value"
        param = getattr(exc, "param", None)
        if param is not None:  # the setting that gave the bad value: the stage's own, else [common]
            keys = _stage_keys(exp, stage)[2]
            given = [("stage", k) for k in stage.settings if getattr(keys.get(k.replace("-", "_")), "name", None)
                     == param.name] or [("common", k) for k in exp.common
                                        if getattr(keys.get(k.replace("-", "_")), "name", None) == param.name]
            if given:
                table, key = given[-1]
                where = f"{exp.origin(stage.name if table == 'stage' else 'common', key)} ('{key}')"
        raise StageError(f"stage '{stage.name}' of {exp.source}: {exc.format_message()}\n(it would run: "
                         f"vl {stage.command} {shlex.join(stage_argv(exp, stage, out, device))}) Fix the value in "
                         f"{where}; no stage has run.", exc.exit_code) from None


def plan(exp: Experiment, out: Path, device: str | None) -> list[tuple[Stage, list[str]]]:
    """Every stage of ``exp`` with its command line, all checked before any stage runs: the keys of
    [common] and of each stage, and each command line parsed as its command will."""
    check_common(exp)
    plans = [(s, stage_argv(exp, s, out, device)) for s in exp.stages]
    for stage, _ in plans:
        stage_context(exp, stage, out, device).close()
    return plans


def same_stage(record: dict, argv: list[str], out: Path, command: str) -> bool:
    """Whether a stage record was made by the command line ``argv``, wherever the experiment folder
    was then (a copied or moved folder is reused) and with old spellings of flags read as today's."""
    def canonical(args: list[str], root: str) -> list[str]:
        renamed = alias_map(cli.commands[command].get_params(cli.commands[command].make_context(
            command, [], resilient_parsing=True))) if command in cli.commands else {}
        prefix = root.rstrip("/") + "/"
        return [renamed.get(a, "@OUT/" + a[len(prefix):] if a.startswith(prefix) else a) for a in args]

    old = record.get("argv") or []
    return canonical(old, record.get("out", str(out))) == canonical(argv, str(out))


def _stage_start(exp: Experiment, stage: Stage, argv: list[str], out: Path, folder: Path, i: int, n: int, line: str,
                 echo) -> dict[str, bool] | None:
    """Check a stage's folder and record its start; the extra settings it runs with (``resume`` or
    ``overwrite`` for its own unfinished artifact), or None when it finished earlier."""
    record = folder / RECORD
    if record.exists():
        rec = read_json(record)
        if not same_stage(rec, argv, out, stage.command):
            raise OutputError(f"{folder} was made by other settings than this recipe's stage '{stage.name}' now "
                              f"asks for (it ran `{' '.join(['vl', rec.get('command', '?'), *rec.get('argv', [])])}`). "
                              f"Choose another --out, or delete {folder} to run the stage again.")
        if rec.get("done"):
            echo(f"[{i}/{n}] {stage.name}: done earlier, reused ({folder})")
            return None
    echo(f"[{i}/{n}] {stage.name}: {line}")
    extra = {}
    found = describe(folder)
    if not record.exists() and not found.empty:
        raise OutputError(f"{folder} holds {found.what}, which this recipe's stage '{stage.name}' did not make. "
                          f"Choose another --out, or move {folder} away.")
    if record.exists() and found.kind == COMMAND_KINDS[stage.command]:  # this stage's unfinished artifact
        extra = {"resume": True} if found.kind in RESUMABLE else {"overwrite": True}
    folder.mkdir(parents=True, exist_ok=True)
    write_json(record, {"command": stage.command, "argv": argv, "out": str(out), "done": False})
    return extra


def _missing(folder: Path) -> list[Path]:
    """The folders from ``folder`` up that do not exist yet (the deepest first)."""
    missing = []
    for d in [folder, *folder.parents]:
        if d.exists():
            break
        missing.append(d)
    return missing


def _leave_nothing(folder: Path, created: list[Path]) -> None:
    """After a stage that failed or was stopped: when it wrote nothing (its folder holds only the
    stage record, or temporary files of interrupted writes), remove the record and the folders
    :func:`run_experiment` created for it, so the corrected command starts the stage afresh."""
    if not describe(folder).empty:
        return  # it did work: the record stays, and the same command continues the stage
    names = [RECORD] + ([RECORD_NAME] if folder in created else [])
    for name in names:  # vl's own records only; the folder it created for the stage, if nothing else is there
        path = folder / name
        try:
            if path.is_file() and not path.is_symlink():
                path.unlink()
                _forget(path)
        except OSError:
            return
    for d in created:  # the deepest first; only while empty
        try:
            d.rmdir()
        except OSError:
            break


def _forget(path: Path) -> None:
    """Note in the record of the claimed folder holding ``path`` (OUT) that vl removed it."""
    rec = record_for(path)
    if rec is not None:
        rec.add("gone", path)


def run_experiment(exp: Experiment, out: Path, *, device: str | None = None, echo=click.echo) -> dict[str, dict]:
    """Run every stage of ``exp`` into ``out`` (a finished stage is reused; an interrupted one
    resumes: ``--resume`` for experts and distill stages, ``--overwrite`` for the others, and only
    in a folder holding that stage's own artifact); return the metrics of its eval stages by stage
    name.  The caller claims ``out`` (:func:`vlcore.cli.common.claim_out`)."""
    plans = plan(exp, out, device)  # every stage checked before any runs
    main = distributed.is_main()  # under torchrun: rank 0 decides and records; all ranks run experts and distill
    if main:
        out.mkdir(parents=True, exist_ok=True)
    n = len(plans)
    for i, (stage, argv) in enumerate(plans, 1):
        folder = stage_folder(exp, stage, out)
        record = folder / RECORD
        line = f"vl {stage.command} {shlex.join(argv)}"
        created = _missing(folder) if main else []
        extra = _stage_start(exp, stage, argv, out, folder, i, n, line, echo) if main else None
        extra = distributed.broadcast(extra)  # None: done earlier
        if extra is None:
            continue
        t0 = time.time()
        cmd = cli.commands[stage.command]
        finished = False
        try:
            if main or stage.command in ("experts", "distill"):
                try:
                    with stage_context(exp, stage, out, device, extra) as ctx:
                        cmd.invoke(ctx)
                except click.ClickException as exc:  # its exit status is kept: 2 for a usage error
                    raise StageError(f"stage '{stage.name}' of {exp.source} failed: {exc.format_message()}\n"
                                     f"(it ran: {line})", exc.exit_code) from None
            finished = True
        finally:
            if not finished and main:
                _leave_nothing(folder, created)  # a stage that did no work leaves nothing
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
    labels = labels or {}
    rows = [(labels.get(k, k), m) for k, m in results.items()]
    table = format_table(rows)
    seen = {line for line in (candidates_line(m) for m in results.values()) if line}
    if len(seen) == 1:
        table += "\n" + seen.pop()
    else:
        table += "".join(f"\n{labels.get(k, k)}: {candidates_line(m)}" for k, m in results.items()
                         if candidates_line(m))
    write_json(out / "results.json", {labels.get(k, k): {**public_metrics(m), "lr_img": m.get("lr_img"),
                                                          "lr_txt": m.get("lr_txt"), "storage": m.get("storage")}
                                      for k, m in results.items()})
    write_text(out / "results.md", f"{title}: retrieval (%), mean±std over seeds of models trained from scratch "
                                    f"on each set. {LEGEND}\n\n```\n{table}\n```\n")
    curves = {labels.get(k, k): m["curve"] for k, m in results.items() if "curve" in m}
    if curves:
        recall_curves(curves, out / "recall.png", title=title)
    return table


def _check_data_is_read(exp: Experiment, data_dir: str) -> None:
    """``--data`` for a recipe whose stages run on a dataset that reads no folder (the demo's
    ``embedded``) would be ignored: refused before any stage, as each command refuses it."""

    for stage in exp.stages:
        name = stage.settings.get("dataset", exp.common.get("dataset"))
        if isinstance(name, str):
            try:
                cls = get_host().get("dataset", name)
            except VLError:
                continue  # an unknown name: the stage's command line says so when it is checked
            try:
                refuse_ignored_folder(cls, data_dir)
            except ConfigError as exc:
                raise ConfigError(f"{exp.source}: stage '{stage.name}': {exc} (In a recipe: --set "
                                  f"common.dataset=NAME.)") from None


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
    recipes/ in the source tree and `vlcore.artifacts.experiment` for the format.
    """
    exp = load(recipe)
    if data_dir is not None:
        exp.common["data"] = data_dir
        _check_data_is_read(exp, data_dir)
    if split is not None:
        for s in exp.stages:
            if s.command == "eval":
                s.settings.pop("split", None)
                s.settings["eval-split"] = split
    for assignment in sets:
        override(exp, assignment)
    out = Path(out or Path("runs") / Path(exp.source).stem)
    plans = plan(exp, out, device)  # every stage checked before OUT is touched
    if dry_run:
        if as_json:
            print_json([{"stage": s.name, "command": s.command, "argv": argv,
                         "line": f"vl {s.command} {shlex.join(argv)}"} for s, argv in plans])
            return
        for s, argv in plans:
            click.echo(f"vl {s.command} {shlex.join(argv)}")
        return
    echo = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    if distributed.launched():  # torchrun: the experts and distill stages run across the ranks
        resolve_device(device or str(exp.common.get("device", "cpu")), distributed=True)
    claim_out(out, "run", resume=True).prepare()
    results = run_experiment(exp, out, device=device, echo=echo)
    if not results:
        if as_json:
            print_json({})  # no eval stage: no metrics, still one document
        return
    table = report(results, out, title=exp.description or Path(exp.source).stem)
    if as_json:
        pub = {k: public_metrics(m) for k, m in results.items()}
        print_json(next(iter(pub.values())) if len(pub) == 1 else pub)
    else:
        click.echo("")
        click.echo(table)
        click.echo(LEGEND)
        click.echo(f"\nwrote {out}/results.md, results.json, recall.png")
