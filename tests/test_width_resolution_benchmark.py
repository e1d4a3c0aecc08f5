"""A smoke run of benchmarks/width_resolution_search.py on a small saved slimmable model: the
Bayesian search against the exhaustive query table, its table, JSON and plot."""

import json
import pathlib
import subprocess
import sys

import harness

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "width_resolution_search.py"


def test_width_resolution_search_benchmark_smoke(tmp_path):
    model_path = tmp_path / "tiny.keras"
    harness.tiny_slimmable_model(classes=10).save(model_path)
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", f"--model_path={model_path}",
                          f"--output_dir={tmp_path / 'out'}"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "## Width x resolution search vs the exhaustive query table" in run.stdout
    assert "within one validation image in 200 of the query table's best: 1 of 1" in run.stdout
    made = json.loads((tmp_path / "out" / "tuner_benchmark.json").read_text())
    assert made["grid"] == 4 and made["max_trials"] == 4 and made["val_images"] == 180
    assert len(made["table"]) == 4
    (r,) = made["runs"]
    # Every configuration within the budget is tried once (the smoke run searches the whole
    # grid), so the search finds the query table's best.
    assert r["trials"] == r["feasible"] < 4 and r["ok"] and r["gap_images"] == 0
    assert r["search_best"]["macs"] <= r["budget_macs"]
    # The search's trial and the query table measure the same configuration alike.
    assert r["search_val_top1"] == r["search_best"]["top1"]
    assert (tmp_path / "out" / "search_vs_table.png").stat().st_size > 10_000
