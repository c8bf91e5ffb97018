"""benchmarks/flickr8k.py, the Flickr8k table driver: what a row's entry records (no model trained:
the row's `vl run` is replaced by a stand-in that leaves what a finished run leaves)."""
from __future__ import annotations

import json
import subprocess

from benchmark_scripts import load_benchmark


def table():
    return load_benchmark("flickr8k", "flickr8k_table")


def test_a_row_records_the_storage_its_set_holds(tmp_path, monkeypatch):
    """`vl run --json` prints the recalls only: the entry takes the set's storage (pairs, floats)
    from its meta.json, for a coreset's stage as for a distiller's."""
    mod = table()
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    recalls = {"tr_r1": 1.0, "ir_r1": 2.0, "rsum": 3.0}
    for key, stage, storage in (("herding-100", "coreset", {"pairs": 100, "floats": 3801600, "bytes": 15206400}),
                                ("lors-200", "distilled", {"pairs": 199, "floats": 7569365, "bytes": 30277460})):
        def fake_vl(cmd, **kw):
            folder = tmp_path / mod.RUNS / key / stage
            folder.mkdir(parents=True)
            meta = {"storage": storage, "spec": {"encoder": "effnet-lite0"}} if stage == "distilled" else {"storage": storage}
            (folder / "meta.json").write_text(json.dumps(meta))
            return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(recalls) + "\n")

        monkeypatch.setattr(mod.subprocess, "run", fake_vl)
        row = next(r for r in mod.ROWS if r[0] == key)
        entry = mod.run_row(key, row[1], row[2], "DATA")
        assert entry["metrics"]["storage"] == {"pairs": storage["pairs"], "floats": storage["floats"]}
        assert entry["metrics"]["rsum"] == 3.0 and entry["command"].startswith(f"vl run recipes/{row[1]}.toml")
