"""Seed 002's complexity tables (apps.benchmark --multires) and a smoke run of
benchmarks/multires.py (experiments and speed)."""

import pathlib
import re
import subprocess
import sys

import pytest

from bl_keras import benchmark

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "multires.py"


def _cells(table, label):
    line = next(line for line in table.splitlines() if line.startswith(f"| {label} "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_table1_rows_carry_our_numbers():
    table = benchmark.multires_table1(
        benchmark.multires_rows(benchmark.MULTIRES_TABLE1, progress=False))
    no_pool = _cells(table, "No Pooling")
    assert no_pool[1:5] == ["multires_10x64_nopool", "302,400", "0.310", "0.31"]
    ours = _cells(table, "Our Model")
    assert ours[2:5] == ["302,400", "0.411", "0.41"] and ours[5] == "92.5"
    assert _cells(table, "Scale Invariant")[3] == "0.411"
    predefined = _cells(table, "Predefined Pooling")
    assert predefined[3] == "0.111" and benchmark.NOT_FROM_ARCHITECTURE in predefined[6]
    for label in ("Our Model (thr 0.1)", "Our Model (thr 0.2)", "Our Model (one res.)"):
        cells = _cells(table, label)
        assert benchmark.DEPENDS_ON_WEIGHTS in cells[6]
        assert 0 < float(cells[3]) < 0.411
    # The example's thresholds keep fewer levels as they rise.
    macs = [float(_cells(table, label)[3]) for label in
            ("Our Model (thr 0.1)", "Our Model (thr 0.2)", "Our Model (one res.)")]
    assert macs[0] > macs[1] > macs[2]


def test_table4_rows_carry_our_numbers():
    table = benchmark.multires_table4(
        benchmark.multires_rows(benchmark.MULTIRES_TABLE4, progress=False))
    assert _cells(table, "Conv 64x10")[2:6] == ["302,400", "0.3M", "0.411", "0.41"]
    assert _cells(table, "Conv 128x8")[2:6] == ["899,712", "0.9M", "1.224", "1.23"]
    eff = _cells(table, "Eff-Conv 128x8")
    assert eff[2:4] == ["1,535,808", "1.5M"] and eff[5] == "1.69"
    assert float(eff[4]) == pytest.approx(1.689, rel=0.01)


def test_multires_benchmark_smoke(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows=onelevel", "--epochs=1", "--width=4",
         "--batch_size=32", "--steps_per_epoch=1", f"--workdir={tmp_path}",
         "--runtimes=graph", "--repeats=2", "--latency_repeats=2", "--nobreakdown"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    for label in ("Our Model (one res.)", "Our Model"):
        assert re.search(rf"\| 1 +\| {re.escape(label)} +\| \d+\.\d +\| ", out), label
    assert (tmp_path / "onelevel" / "init.keras").exists()
    assert (tmp_path / "learned" / "model.keras").exists()
    for name in ("pruned_one_level", "hand_written", "multires_10x64",
                 "multires_10x64_nopool"):
        assert f"| {name} " in out
    assert re.search(r"\(i\) pruned one-level / hand-written, latency batch 1 +\| \d+\.\d+x", out)
    assert re.search(r"\(ii\) 4-level / no-pool time per MAC, batch 16 +\| \d+\.\d+x", out)
