"""`make demo`'s job end to end (at smoke settings): the four parts, the summary table, the
files under the workdir, and an output free of TensorFlow's INFO logs."""

import json
import os
import subprocess
import sys

from apps import quiet

ENV = {k: v for k, v in os.environ.items() if k != quiet.CHILD}

FILES = ("accuracy_vs_macs.png", "bl_resnet20_cifar_int8.tflite", "multires/mixing.png",
         "multires/pruned.keras", "multires/finetune/model.keras", "mutualnet/model.keras",
         "query_table.png", "search/result.json", "search/result.png", "summary.json")


def test_demo_runs_the_three_papers_quietly(tmp_path):
    run = subprocess.run([sys.executable, "-m", "apps.demo", f"--workdir={tmp_path}",
                          "--smoke"], capture_output=True, text=True, timeout=900, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    for heading in ("## 1. Big-Little Net", "## 2. Multi-resolution convolution",
                    "## 3. MutualNet", "## 4. Budgeted search", "## Summary"):
        assert heading in out, heading
    for name in FILES:
        path = tmp_path / name
        assert path.exists() and path.stat().st_size > 0, name
    for name in ("accuracy_vs_macs.png", "multires/mixing.png", "query_table.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((tmp_path / "summary.json").read_text())
    assert [r["part"] for r in rows] == ["Big-Little"] * 2 + ["Multi-resolution"] * 2 + [
        "MutualNet"] * 2 + ["bL search"]
    summary = out.split("## Summary")[1]
    for row in rows:
        assert row["network"] in summary
        assert row["macs"] > 0 and 0 <= row["top1"] <= 1, row
    assert rows[1]["macs"] < rows[0]["macs"]  # bL-ResNet-20 is cheaper than ResNet-20
    assert rows[3]["macs"] <= rows[2]["macs"]  # pruning never adds MACs (3 steps move little)
    assert rows[5]["macs"] <= 0.5 * rows[4]["macs"]  # MutualNet's pick fits its budget
    search = json.loads((tmp_path / "search" / "result.json").read_text())
    assert search["best"]["macs"] <= search["budget"]["max_macs"]
    lines = [*out.splitlines(), *run.stderr.splitlines()]
    noise = [line for line in lines if quiet.is_noise(line) or "Assets written to" in line]
    assert not noise, noise[:5]


def test_quiet_filter_keeps_everything_but_info_logs(tmp_path):
    kept = ["Traceback (most recent call last):", "W0000 00:00:1.2 17 foo.cc:3] a warning",
            "ValueError: bad value 3", "epoch 1/3\r", "INFO: ours", "done"]
    noise = ["WARNING: All log messages before absl::InitializeLog() is called are written to "
             "STDERR",
             "I0000 00:00:1796226490.816498    2380 port.cc:153] oneDNN custom operations are on.",
             "E0000 00:00:1796226500.226679    2380 cuda_platform.cc:52] failed call to cuInit: "
             "INTERNAL", "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32",
             "INFO:tensorflow:Assets written to: /tmp/x/assets",
             "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."]
    assert not any(quiet.is_noise(line) for line in kept)
    assert all(quiet.is_noise(line) for line in noise)
    read, write = os.pipe()
    text = "".join(f"{line}\n" if not line.endswith("\r") else line
                   for pair in zip(kept, noise) for line in pair) + kept[-1] + "\n" + "tail"
    os.write(write, text.encode())
    os.close(write)
    with open(tmp_path / "out", "wb") as target:
        quiet.copy_filtered(read, target)
    os.close(read)
    assert (tmp_path / "out").read_bytes().decode() == (
        "Traceback (most recent call last):\nW0000 00:00:1.2 17 foo.cc:3] a warning\n"
        "ValueError: bad value 3\nepoch 1/3\rINFO: ours\ndone\ndone\ntail")
