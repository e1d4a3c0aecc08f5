"""A smoke run of benchmarks/mutualnet.py (seed 003): the cost checks and the MutualNet /
US-Net / independent experiment at tiny settings, then the JSON and the plot it writes."""

import json
import math
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "mutualnet.py"


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_mutualnet_benchmark_smoke(tmp_path):
    # The two parts run side by side (each mostly traces graphs on one core): half the time.
    parts = {"cost": "--noexperiment", "experiment": "--nocost"}
    runs = {part: subprocess.Popen(
        [sys.executable, str(SCRIPT), "--smoke", flag, f"--output_dir={tmp_path / part}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for part, flag in parts.items()}
    out = {}
    for part, run in runs.items():
        out[part], err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
    for part, heading in (("cost", "## (a) MutualNet step"),
                          ("cost", "## (b) subnetwork(us_mobilenet_v1, 1.0)"),
                          ("cost", "## (c) us_mobilenet_v1 sub-network latency"),
                          ("experiment", "## Experiment:"),
                          ("experiment", "Chosen configuration per MACs budget")):
        assert heading in out[part], heading
    results = {part: json.loads((tmp_path / part / "mutualnet.json").read_text())
               for part in parts}
    assert results["cost"]["smoke"] is True and "experiment" not in results["cost"]
    assert "cost" not in results["experiment"]

    cost = results["cost"]["cost"]
    step = cost["step"]
    assert _positive(step["ratio"]) and _positive(step["ratio_all_draws"])
    for draw in step["draws"]:
        assert _positive(draw["step_seconds"]) and _positive(draw["sum_seconds"])
        assert draw["sub_networks"][0]["role"] == "full"
        assert all(_positive(s["seconds"]) for s in draw["sub_networks"])
    tflite = cost["tflite_vs_keras"]
    assert _positive(tflite["ratio"]) and _positive(tflite["ratio_best_of"])
    assert set(tflite["latency_ms"]) == {"subnetwork", "keras"}
    assert tflite["macs"]["subnetwork"] == tflite["macs"]["keras"]  # the same network
    latency = cost["latency"]
    assert latency["rows"] and all(_positive(r["latency_ms"]) for r in latency["rows"])
    assert isinstance(latency["monotonic_in_width"], bool)
    assert isinstance(latency["monotonic_in_resolution"], bool)

    experiment = results["experiment"]["experiment"]
    tables = experiment["tables"]
    for kind in ("mutualnet", "usnet", "independent", "usnet_single_resolution"):
        assert tables[kind], kind
        for row in tables[kind]:
            assert {"width", "resolution", "macs", "params", "top1", "latency_ms"} <= set(row)
            assert 0.0 <= row["top1"] <= 1.0 and row["macs"] > 0
    widths = {r["width"] for r in tables["mutualnet"]}
    resolutions = {r["resolution"] for r in tables["mutualnet"]}
    assert len(tables["mutualnet"]) == len(widths) * len(resolutions) >= 4
    assert {r["resolution"] for r in tables["usnet_single_resolution"]} == {max(resolutions)}
    assert experiment["choices"]
    for choice in experiment["choices"]:
        assert _positive(choice["budget_macs"])
        for kind in ("mutualnet", "usnet", "independent"):
            chosen = choice[kind]
            assert chosen is None or chosen["macs"] <= choice["budget_macs"]
    assert experiment["choices"][-1]["mutualnet"] is not None  # the full budget fits all
    plot = pathlib.Path(experiment["plot"])
    assert plot.exists() and plot.stat().st_size > 0 and plot.parent == tmp_path / "experiment"
