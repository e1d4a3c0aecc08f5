"""benchmarks/gpu.py on CPU with tiny sizes (--smoke): every kind of group, rows as they come
(a run killed midway keeps them), and --budget_s."""

import json
import os
import sys

import keras
import pytest

if keras.backend.backend() != "jax":
    pytest.skip("JAX-backend tests (run by tests/test_backends.py)", allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu  # noqa: E402


def _killed():
    raise KeyboardInterrupt


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke plan, then a group whose model build is interrupted (a killed run)."""
    output = str(tmp_path_factory.mktemp("gpu") / "rows.json")
    lines = []
    plan = gpu.plan(smoke=True)
    killed = gpu.Group("killed", (("a", _killed),), (32, 32, 3), "infer", 1, "float32")
    with pytest.raises(KeyboardInterrupt):
        gpu.run_benchmark([*plan, killed], output, budget_s=600, repeats=2, iters=1,
                          log=lines.append)
    with open(output) as f:
        return json.load(f), lines


def test_smoke_rows(smoke):
    result, lines = smoke
    assert not result["complete"] and not result["skipped"]  # killed after the smoke plan
    rows = {(r["group"], r["model"]): r for r in result["rows"]}
    assert len(rows) == len(result["rows"]) == 6
    assert {r["mode"] for r in result["rows"]} == {"train", "infer"}
    assert {r["policy"] for r in result["rows"]} == {"mixed_bfloat16", "float32"}
    bl = rows[("resnet20 infer b2 mixed_bfloat16", "bl_resnet20_cifar")]
    assert bl["macs"] == 27_247_232 and bl["mac_ratio"] == pytest.approx(40_813_184 / 27_247_232)
    pruned = rows[("multires train b2 mixed_bfloat16", "pruned")]
    assert pruned["mac_ratio"] > 1
    widths = [r for r in result["rows"] if r["group"].startswith("us_mobilenet")]
    assert [w["model"] for w in widths] == ["width 1.0", "width 0.5"]
    assert widths[1]["macs"] < widths[0]["macs"] / 3
    for row in result["rows"]:
        assert row["step_ms"] > 0 and row["tflops"] > 0
        factor = 6 if row["mode"] == "train" else 2
        assert row["tflops"] == pytest.approx(
            factor * row["macs"] * row["batch"] / (row["step_ms"] / 1e3) / 1e12)
        assert row["speedup"] > 0
    assert lines[1] == gpu.HEADER and len(lines) == 2 + 6
    assert result["device"].startswith("cpu") and result["backend"] == "jax"


def test_budget_stops_before_a_group_that_would_not_fit(tmp_path):
    output = str(tmp_path / "rows.json")
    groups = gpu.plan(smoke=True)[1:]
    result = gpu.run_benchmark(groups, output, budget_s=0, repeats=1, iters=1, log=lambda _: 0)
    with open(output) as f:
        assert json.load(f) == json.loads(json.dumps(result))
    assert not result["complete"] and not result["rows"]
    assert result["skipped"] == [g.name for g in groups]
