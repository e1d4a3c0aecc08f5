import subprocess
import sys

import numpy as np
import pytest

from bl_keras import benchmark, models, paper, timing


def test_every_runtime_computes_the_model():
    model = models.bl_resnet20_cifar(classes=5)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = model(x, training=False).numpy()
    for runtime in timing.RUNTIMES:
        out = timing.make_runner(model, runtime, batch=2)(x)
        np.testing.assert_allclose(out, expected, atol=1e-4, err_msg=runtime)


def test_tflite_conversion_folds_batch_norm():
    """The SavedModel route folds BN into the convs: no variable reads, no standalone BN math."""
    from ai_edge_litert.interpreter import Interpreter

    flatbuffer = timing.to_tflite(models.resnet20_cifar())
    ops = {d["op_name"] for d in Interpreter(model_content=flatbuffer)._get_ops_details()}
    assert "CONV_2D" in ops
    assert not ops & {"READ_VARIABLE", "VAR_HANDLE", "RSQRT"}


def test_speed_comparison_reports_all_runtimes():
    timings, summary = benchmark.speed_comparison(
        "resnet20_cifar", "bl_resnet20_cifar", size=32, batch=4, repeats=2, latency_repeats=3,
        progress=False,
    )
    assert {(t.runtime, t.batch) for t in timings} == {
        (r, b) for r in timing.RUNTIMES for b in (4, 1)
    }
    assert summary.mac_ratio > 1
    assert summary.throughput[0].batch == 4 and summary.latency[1].batch == 1
    table = benchmark.timings_table(timings, "resnet20_cifar", "bl_resnet20_cifar")
    assert table.count("\n") == 2 + 2 * len(timing.RUNTIMES) - 1
    assert "of MAC ratio" in benchmark.summary_table(summary)


def test_measure_needs_static_sizes():
    with pytest.raises(ValueError, match="static input size"):
        timing.measure({"m": models.resnet20_cifar(input_shape=(None, None, 3))}, repeats=1,
                       progress=False)


def test_complexity_rows_saving_against_baseline():
    rows = benchmark.complexity_rows(
        (benchmark.paper_entry("resnet50"), benchmark.paper_entry("bl_resnet50", 2, 4)),
        progress=False,
    )
    assert rows[1].saving == pytest.approx(4_089_184_256 / 2_856_058_880)
    assert rows[1].paper.gmacs == 2.85 and rows[1].paper_saving == pytest.approx(4.09 / 2.85)
    assert "bl_resnet50 (a=2, b=4)" in benchmark.complexity_table(rows)


def test_models_reported_only_at_256_are_compared_at_256():
    rows = benchmark.complexity_rows(
        (benchmark.paper_entry("shufflenet_v2", width=1.0),
         benchmark.paper_entry("bl_shufflenet_v2", 2, 2, width=1.0)),
        progress=False,
    )
    assert rows[1].label == "bl_shufflenet_v2 1x (a=2, b=2)"
    assert rows[1].saving == pytest.approx(rows[0].macs_224 / rows[1].macs_256)
    assert rows[1].paper_saving == pytest.approx(0.146 / 0.150)


def test_every_paper_model_has_a_paper_figure():
    labels = [label for label, _, _ in benchmark.PAPER_MODELS]
    assert set(labels) == set(paper.PAPER)


def test_benchmark_app_runs():
    out = subprocess.run(
        [sys.executable, "-m", "apps.benchmark", "--nocomplexity", "--baseline=resnet20_cifar",
         "--model=bl_resnet20_cifar", "--size=32", "--batch=2", "--repeats=1",
         "--latency_repeats=2",
         "--runtimes=graph,tflite"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    assert "latency, batch 1" in out and "throughput, batch 2" in out
