"""vl deletes only what it recorded writing (issue: nothing a user made is ever deleted).

Every command claims its output folder through :class:`vlcore.artifacts.outdir.OutputFolder`, `vl export`
included; ``--overwrite`` deletes the files the folder's record (``.vl-files.jsonl``) lists and the
folders that held them once empty, never a file no record lists, never through a link.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vlcore.artifacts.io import RECORD_NAME
from vlcore.artifacts.outdir import OutputFolder, describe
from vlcore.testing.cli import invoke_vl, refused_cleanly
from vlcore.testing.runs import TINY_DATA_ARGS as TINY
from vlcore.testing.runs import TINY_MODEL_ARGS as MODEL

def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root`` (links as their target, files as their bytes)."""
    out = {}
    for dirpath, dirnames, files in os.walk(root):
        for n in dirnames + files:
            p = Path(dirpath) / n
            rel = p.relative_to(root).as_posix()
            out[rel] = ("-> " + os.readlink(p)) if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
    return out


@pytest.fixture(scope="module")
def coreset(tmp_path_factory):
    """A coreset evaluated once (its eval-dev/ is a nested artifact with its own record)."""
    root = tmp_path_factory.mktemp("made")
    invoke_vl("coreset", "--method", "random", "--pairs", 4, *TINY, *MODEL, "--out", root / "cs")
    invoke_vl("eval", root / "cs", "--eval-seeds", 1, "--eval-epochs", 1)
    return root / "cs"


def fresh(coreset: Path, ws: Path, name: str = "cs") -> Path:
    shutil.copytree(coreset, ws / name, symlinks=True)
    return ws / name


def refused(argv, ws: Path, *expected: str, code: int = 2) -> None:
    before = tree(ws)
    refused_cleanly(invoke_vl(*argv, ok=False), code, expected)
    assert tree(ws) == before  # nothing deleted, changed or created


# ------------------------------------------------------------------ vl export claims OUT like every command
def test_export_overwrite_never_deletes_a_users_folder(coreset, tmp_path):
    cs = fresh(coreset, tmp_path)
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "thesis.tex").write_text("x")
    refused(["export", cs, docs, "--overwrite"], tmp_path, "thesis.tex", "no vl command wrote")
    refused(["export", cs, docs], tmp_path, "thesis.tex")


def test_export_into_a_folder_holding_its_input_is_refused(coreset, tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    cs = fresh(coreset, proj)
    (proj / "notes.md").write_text("mine")
    refused(["export", cs, proj, "--overwrite"], tmp_path, "an input of this command")
    refused(["export", cs, cs, "--overwrite"], tmp_path, "an input of this command")


def test_export_replaces_only_its_own_export_and_takes_the_lock(coreset, tmp_path):
    cs = fresh(coreset, tmp_path)
    out = tmp_path / "hf"
    invoke_vl("export", cs, out)
    refused(["export", cs, out], tmp_path, "already holds an exported pair set", "--overwrite")
    invoke_vl("export", cs, out, "--overwrite")
    assert describe(out).kind == "export" and describe(out).foreign == []
    with OutputFolder(out, "export", overwrite=True):  # another export holds the folder
        refused(["export", cs, out, "--overwrite"], tmp_path, "Another vl command is writing", code=1)
    (out / "mine.txt").write_text("keep")
    refused(["export", cs, out, "--overwrite"], tmp_path, "mine.txt")


# ------------------------------------------------------------------ --overwrite deletes only recorded files
def test_a_users_file_inside_an_eval_folder_is_never_deleted(coreset, tmp_path):
    cs = fresh(coreset, tmp_path)
    (cs / "eval-mine").mkdir()
    (cs / "eval-mine" / "notes.txt").write_text("mine")
    argv = ["coreset", "--method", "random", "--pairs", 4, *TINY, *MODEL, "--out", cs, "--overwrite"]
    refused(argv, tmp_path, "eval-mine/notes.txt", "not vlcore's")
    (cs / "eval-dev" / "mine.txt").write_text("also mine")  # inside vl's own eval folder too
    shutil.rmtree(cs / "eval-mine")
    refused(argv, tmp_path, "eval-dev/mine.txt")
    (cs / "eval-dev" / "mine.txt").unlink()
    invoke_vl(*argv)  # nothing foreign left: replaced, its eval-dev/ (recorded there) with it
    assert not (cs / "eval-dev").exists() and describe(cs).foreign == []


def test_a_file_named_like_a_temporary_file_is_not_taken_for_vls(coreset, tmp_path):
    cs = fresh(coreset, tmp_path)
    (cs / ".pairs.safetensors.part.tmp").write_text("mine")
    (cs / ".meta.json.3f9a1c2e.tmp").write_text("mine too")
    argv = ["coreset", "--method", "random", "--pairs", 4, *TINY, *MODEL, "--out", cs, "--overwrite"]
    refused(argv, tmp_path, ".pairs.safetensors.part.tmp", ".meta.json.3f9a1c2e.tmp")


def test_cleaning_never_follows_a_link_out_of_the_folder(coreset, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "pairs.safetensors").write_text("someone else's")
    (outside / "eval-dev").mkdir()
    (outside / "eval-dev" / "metrics.json").write_text("{}")
    cs = fresh(coreset, tmp_path)
    shutil.rmtree(cs / "eval-dev")
    os.symlink(outside / "eval-dev", cs / "eval-dev")  # a link where vl's folder was
    argv = ["coreset", "--method", "random", "--pairs", 4, *TINY, *MODEL, "--out", cs, "--overwrite"]
    refused(argv, tmp_path, "eval-dev")
    # a record naming a path through a link is not followed either
    os.unlink(cs / "eval-dev")
    os.symlink(outside, cs / "link")
    with open(cs / RECORD_NAME, "a") as f:
        f.write('{"file": "link/pairs.safetensors"}\n{"file": "../outside/pairs.safetensors"}\n')
    refused(argv, tmp_path, "link")
    os.unlink(cs / "link")
    invoke_vl(*argv)
    assert (outside / "pairs.safetensors").read_text() == "someone else's"
    assert (outside / "eval-dev" / "metrics.json").exists()


def test_an_artifact_without_a_record_is_not_replaced(coreset, tmp_path):
    cs = fresh(coreset, tmp_path)
    for rec in cs.rglob(RECORD_NAME):
        rec.unlink()  # as an older vlcore, or a copy by hand, left it
    argv = ["coreset", "--method", "random", "--pairs", 4, *TINY, *MODEL, "--out", cs, "--overwrite"]
    refused(argv, tmp_path, "without a record of its files", "Delete it yourself")


def test_a_folder_left_with_only_empty_folders_is_empty(tmp_path):
    out = tmp_path / "o"
    (out / "buffer" / "deeper").mkdir(parents=True)  # what a command stopped before its first write leaves
    assert describe(out).empty
    invoke_vl("coreset", "--method", "random", "--pairs", 4, *TINY, *MODEL, "--out", out)
    assert describe(out).kind == "coreset" and describe(out).foreign == []
