"""`make demo`'s job end to end: both digits models >= 90%, int8 parity, the plot."""

import os
import subprocess
import sys

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_demo_trains_compares_exports_and_plots(tmp_path):
    run = subprocess.run([sys.executable, "-m", "apps.demo", f"--workdir={tmp_path}"],
                         capture_output=True, text=True, timeout=600, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    import json

    accuracies = {}
    for name in ("resnet20_cifar", "bl_resnet20_cifar"):
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        accuracies[name] = metrics["top1"]
        assert f"| {name}" in out
    assert min(accuracies.values()) >= 0.90, accuracies
    agreement = float(out.split("top-1 agreement with Keras ")[1].split("%")[0])
    assert agreement >= 95.0
    assert (tmp_path / "bl_resnet20_cifar_int8.tflite").stat().st_size > 0
    png = (tmp_path / "accuracy_vs_macs.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
