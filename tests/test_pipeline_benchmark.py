import pathlib
import re
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "pipeline.py"


def test_pipeline_benchmark_runs():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--num_images=24", "--width=120", "--height=90",
         "--image_size=32", "--batch_size=4", "--batches=2", "--rounds=1", "--startup_rounds=1"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    assert "| bl_keras pipelines |" in out and "| keras image_dataset_from_directory |" in out
    assert "repeat=True (the trainer's)" in out
    assert re.search(r"ratio: \d+\.\d\dx \(repeat=True: \d+\.\d\dx\)", out)
    assert re.search(r"CPU ratio: \d+\.\d\dx \(repeat=True: \d+\.\d\dx\)", out)
    # Call to first batch, fresh process and warm, for ours and Keras'.
    assert "| call to first batch, s (median of 1) | fresh process | warm |" in out
    for name in ("bl_keras pipelines", "keras image_dataset_from_directory"):
        assert re.search(rf"\| {name} \| \d+\.\d\d \| \d+\.\d\d \|\n", out), name
    assert re.search(r"start-up time, ours / Keras': \d+\.\d\dx fresh, \d+\.\d\dx warm", out)
    stages = dict(re.findall(r"\| ([^|]+?) \| (\d+) \|\n", out))
    assert set(stages) >= {"read the file", "+ decode the window (fused)",
                           "decode the whole image instead"}
