import csv
import subprocess
import sys

import numpy as np
import pytest

from bl_keras import benchmark, export, models, paper, timing


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

    flatbuffer = export.to_tflite(models.resnet20_cifar())
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


def test_benchmark_app_prints_speed_and_speech_tables():
    out = subprocess.run(
        [sys.executable, "-m", "apps.benchmark", "--nocomplexity", "--baseline=resnet20_cifar",
         "--model=bl_resnet20_cifar", "--size=32", "--batch=2", "--repeats=1",
         "--latency_repeats=2", "--noslimmable", "--runtimes=graph,tflite"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    assert "latency, batch 1" in out and "throughput, batch 2" in out
    assert "## Speech complexity" in out and "Counting convention" in out
    assert "bl_resnet22_speech (a=4, b=1) cat" in out


def test_every_speech_model_has_a_table3_figure():
    labels = [label for label, _, _ in benchmark.SPEECH_MODELS]
    assert labels == list(paper.SPEECH)
    assert [paper.SPEECH[label].line for label in labels] == list(range(1, 8))
    base = paper.SPEECH["resnet22_speech"].gflops
    # Table 3 prints savings computed from unrounded FLOPs: 1.43x for 1.11 / 0.77 = 1.44
    for fig in list(paper.SPEECH.values())[1:]:
        assert fig.saving == pytest.approx(base / fig.gflops, abs=0.015)


def test_speech_complexity_rows_beside_table3():
    rows = benchmark.speech_complexity_rows(progress=False)
    assert [r.label for r in rows] == list(paper.SPEECH)
    base = rows[0]
    assert base.macs == 1_105_164_288 and base.saving == 1.0  # paper: 1.11 GFLOPs
    for r in rows:
        # the 1x1 output conv 512 -> 32000 (with bias), counted in "GMACs", not in "w/o output"
        assert r.macs - r.macs_no_output == 512 * 32000
        assert r.params - r.params_no_output == 513 * 32000
        assert r.saving == pytest.approx(base.macs / r.macs)
        assert r.saving_no_output == pytest.approx(base.macs_no_output / r.macs_no_output)
        if r.paper.line <= 6:  # bL-ResNet-22: within rounding of Table 3, ratios within 5%
            assert r.macs / 1e9 == pytest.approx(r.paper.gflops, abs=0.015), r.label
            assert r.saving == pytest.approx(r.paper.saving or 1.0, rel=0.05), r.label
    # line 7 (bL-PYR, underspecified): our reading is 1.07x against 1.13x, 4.9% below
    pyr = rows[-1]
    assert pyr.paper.line == 7 and pyr.saving == pytest.approx(1.13, rel=0.06)
    assert 1.02e9 < pyr.macs < 1.04e9
    table = benchmark.speech_complexity_table(rows)
    words = " ".join(table.split())
    assert "FLOPs are MACs" in words and "including the 1x1 output layer to 32k" in words
    assert "params (3.0-3.3M) are not reproducible" in words
    assert "our resnet22_speech gives 1.105G against the paper's 1.11G, and 1.089G" in words
    assert table.count("\n| ") == 1 + len(rows)  # header and one line per model
    assert "| 7    | bl_pyr_resnet22_speech (a=4, b=1) | 1.029 | 0.98" in table
    assert "1.07x  | 1.13x" in table


def test_slimmable_rows_are_the_official_figures(reference_dir):
    """US-MobileNetV1 at the ends of the paper's range (and V2 at one width) against the
    reference table of the official code and profiler."""
    with open(reference_dir / "us_mobilenet" / "us_mobilenet_complexity.tsv") as f:
        official = {(r["model"], float(r["width"]), int(r["resolution"])): r
                    for r in csv.DictReader(f, delimiter="\t")}
    rows = benchmark.slimmable_rows(
        (("us_mobilenet_v1", (0.25, 1.0)), ("us_mobilenet_v2", (0.35,))), (224, 128),
        progress=False)
    assert len(rows) == 6
    for r in rows:
        want = official[(r.model, r.width, r.resolution)]
        assert (r.params, r.macs, r.profiler_macs) == (
            int(want["params"]), int(want["macs"]), int(want["macs_official_profiler"]))
    line = benchmark.slimmable_range(rows)
    assert line == ("us_mobilenet_v1 from 0.25x128 to 1x224: paper 13 to 569 MFLOPs; ours "
                    "13.57 to 568.74 MMACs (conv and dense), 13.57 to 568.79 by the official "
                    "profiler, which also counts the pooled tensor")
    assert "| us_mobilenet_v2 | 0.35  | 224" in benchmark.slimmable_table(rows)
