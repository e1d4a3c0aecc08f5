"""Smoke runs of the CPU runtime benchmarks at tiny settings: benchmarks/tflite_vs_onnx.py (the
same network on TFLite and ONNX Runtime, whole, stage by stage and convolution by convolution)
and benchmarks/onnx_export.py (what the ONNX rewrites buy), side by side."""

import pathlib
import subprocess
import sys

import pytest

from bl_keras import models, profile

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
TINY = ["--model=bl_resnet20_cifar", "--size=32", "--repeats=2", "--latency_repeats=2"]


def tables(text):
    """{heading: [[cells], ...]} of the markdown tables under each "## " heading."""
    found, heading = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:]
            found[heading] = []
        elif line.startswith("|") and not line.startswith("|-") and heading is not None:
            found[heading].append([c.strip() for c in line.strip("|").split("|")])
    return {h: rows[1:] for h, rows in found.items()}  # without the header row


def one(found, start):
    matches = [rows for heading, rows in found.items() if heading.startswith(start)]
    assert len(matches) == 1, (start, list(found))
    return matches[0]


def test_tflite_vs_onnx_and_onnx_export_smoke():
    runs = {name: subprocess.Popen([sys.executable, str(BENCHMARKS / f"{name}.py"), *TINY],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in ("tflite_vs_onnx", "onnx_export")}
    out = {}
    for name, run in runs.items():
        out[name], err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]

    found = tables(out["tflite_vs_onnx"])
    whole = one(found, "bl_resnet20_cifar at 32x32")
    assert [row[0] for row in whole] == ["tflite", "litert_compiled", "tflite_resize_merges",
                                         "onnx"]
    assert all(float(row[1]) > 0 and float(row[2]) > 0 for row in whole)
    assert whole[-1][3] == "1.000"  # ratios against ONNX Runtime

    model = models.bl_resnet20_cifar()
    stages = one(found, "Stage by stage")
    assert [row[0] for row in stages] == ["stem", "stage1", "stage2", "stage3", "head"]
    convs = [r for r in profile.mac_table(model) if r.layer_type == "Conv2D"]
    conv_macs = sum(r.macs for r in convs)
    # Every MAC of the model lands in exactly one stage (the head's dense layer included).
    assert sum(float(row[1]) for row in stages) == pytest.approx(
        profile.count_macs(model) / 1e6, abs=0.5 * len(stages))

    by_size = one(found, "Each distinct convolution alone")
    total = next(row for row in by_size if row[0] == "all convolutions")
    assert int(total[1]) == len(convs) == 28
    assert abs(float(total[2]) - conv_macs / 1e6) <= 0.5
    sizes = [row for row in by_size if "x" in row[0] and row[0][0].isdigit()]
    assert [row[0] for row in sizes] == ["32x32", "16x16", "8x8"]
    assert sum(int(row[1]) for row in sizes) == 28
    assert {row[0] for row in by_size} >= {"whole network", "rest (network - convolutions)"}
    worst = one(found, "The 8 convolutions that cost TFLite the most")
    # Times on 2 threads and on 1, less the cost of a call (tiny convolutions: may be < 0).
    assert len(worst) == 8 and all(len(row) == 10 for row in worst)
    assert all(float(cell) == float(cell) for row in worst for cell in row[3:])

    found = tables(out["onnx_export"])
    assert [row[0] for row in one(found, "ONNX Runtime, ")] == ["tf2onnx as is",
                                                               "ours (rewritten)"]
    ops = {row[0]: row[1:] for row in one(found, "Ops ONNX Runtime runs")}
    assert int(ops["Conv"][1]) == len(convs)  # ours after ONNX Runtime's optimizations
    op_times = {row[0]: row[1:] for row in one(found, "Time per op type in ONNX Runtime")}
    assert int(op_times["Conv"][2]) == len(convs) and float(op_times["Conv"][3]) > 0
    assert int(op_times["all"][2]) > len(convs)
    assert float(op_times["all"][3]) >= float(op_times["Conv"][3])
