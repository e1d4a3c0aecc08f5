"""MutualNet's query table (`bl_keras.query_table`, `apps.query_table`) and the export of one
slimmable configuration (`apps.export --width --resolution`).

One tiny slimmable CNN (stem conv, conv, pooled dense head; widths 0.25..1.0) is trained per
module for a few epochs at full width on digits at 16x16. The app runs start in the background
as soon as its `.keras` file exists and are collected by their tests, so their start-up (TF
import) overlaps the in-process tests.
"""

import csv
import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import pipelines
from bl_keras import export, models, slimmable
from bl_keras import query_table as qt
from bl_keras.layers.slimmable import (
    SlimmableBatchNormalization,
    SlimmableConv2D,
    SlimmableDense,
)
from pipelines import digits

REPO = pathlib.Path(__file__).resolve().parents[1]
WIDTHS = (0.25, 0.5, 1.0)
RESOLUTIONS = (16, 8)
CALIBRATION = 256  # BatchNorm calibration images per configuration
EXPORT_WIDTH, EXPORT_SIZE = 0.5, 16


def tiny_slimmable(classes=10, width_range=(0.25, 1.0)):
    kw = {"width_range": width_range}
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = SlimmableConv2D(16, 3, strides=2, padding="same", slim_in=False, name="stem", **kw)(x)
    x = SlimmableBatchNormalization(name="stem_bn", **kw)(x)
    x = keras.layers.ReLU()(x)
    x = SlimmableConv2D(32, 3, padding="same", name="conv", **kw)(x)
    x = SlimmableBatchNormalization(name="conv_bn", **kw)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = SlimmableDense(classes, name="head", **kw)(x)
    return keras.Model(inputs, outputs, name="tiny_us")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model, its .keras path): trained at width 1.0 (batch statistics), not calibrated."""
    keras.utils.set_random_seed(0)
    model = tiny_slimmable()
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(pipelines.get_dataset("digits", "train", 16, 64, training=True, seed=0),
              epochs=6, verbose=0)
    path = tmp_path_factory.mktemp("query_table") / "tiny_us.keras"
    model.save(path)
    return model, path


def _start(app, *args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    return subprocess.Popen([sys.executable, "-m", f"apps.{app}", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module", autouse=True)
def app_runs(trained, tmp_path_factory):
    """The app runs, started at once in the background: name -> (process, output path)."""
    _, model_path = trained
    out = tmp_path_factory.mktemp("apps")
    common = [f"--model_path={model_path}", "--dataset=digits",
              f"--num_calibration_images={CALIBRATION}"]
    export_args = [*common, f"--width={EXPORT_WIDTH}", f"--resolution={EXPORT_SIZE}",
                   "--parity_images=100"]
    runs = {
        "table": (_start("query_table", *common, "--widths=0.5:1.0:0.25",
                         "--resolutions=16,8", "--nolatency", "--max_mmacs=0.1",
                         f"--output={out / 'table.json'}"), out / "table.json"),
        "tflite": (_start("export", *export_args, f"--output={out / 'sub.tflite'}"),
                   out / "sub.tflite"),
        "saved_model": (_start("export", *export_args, "--format=saved_model",
                               f"--output={out / 'served'}"), out / "served"),
        "onnx": (_start("export", *export_args, "--format=onnx",
                        f"--output={out / 'sub.onnx'}"), out / "sub.onnx"),
        "no_width": (_start("export", f"--model_path={model_path}",
                            f"--output={out / 'x.tflite'}"), out / "x.tflite"),
    }
    yield runs
    for process, _ in runs.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def finish(runs, name, ok=True):
    process, path = runs[name]
    stdout, stderr = process.communicate(timeout=300)
    if ok:
        assert process.returncode == 0, stderr[-3000:]
    print(stdout)
    return process.returncode, stdout, stderr, path


@pytest.fixture(scope="module")
def table(trained):
    model, _ = trained
    return qt.query_table(model, "digits", WIDTHS, RESOLUTIONS, latency=False,
                          num_calibration_images=CALIBRATION, progress=False)


def test_width_lists(trained):
    model, _ = trained
    paper = qt.parse_widths("0.25:1.0:0.05")
    assert paper == [round(0.25 + 0.05 * i, 2) for i in range(16)]
    assert paper[3] == 0.4 and paper[-1] == 1.0
    assert qt.default_widths(model) == paper
    assert qt.parse_widths("0.25, 0.5,1") == [0.25, 0.5, 1.0]
    assert qt.parse_widths("0.3:0.92:0.1") == [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.92]
    assert qt.check_widths(model, "0.5:1:0.25") == [0.5, 0.75, 1.0]
    for bad in ("", "a,b", "0.25:1.0:0.05:2", "1:0.5"):
        with pytest.raises(ValueError):
            qt.parse_widths(bad)


def test_rows(table):
    assert len(table) == len(WIDTHS) * len(RESOLUTIONS)
    assert [(r["width"], r["resolution"]) for r in table] == [
        (w, r) for r in RESOLUTIONS for w in WIDTHS]
    for row in table:
        assert tuple(row) == qt.ROW_KEYS
        assert 0.0 <= row["top1"] <= 1.0 and row["latency_ms"] is None
        assert isinstance(row["macs"], int) and isinstance(row["params"], int)
    rows = {(r["width"], r["resolution"]): r for r in table}
    for res in RESOLUTIONS:
        macs = [rows[w, res]["macs"] for w in WIDTHS]
        assert macs == sorted(macs) and len(set(macs)) == len(macs), macs
    for w in WIDTHS:
        assert rows[w, 16]["macs"] > rows[w, 8]["macs"]
        assert rows[w, 16]["params"] == rows[w, 8]["params"]
    assert rows[1.0, 16]["top1"] > 0.4, table  # calibrated full width is far above chance


def test_model_keeps_calibrations(trained, table):
    model, _ = trained
    for w in WIDTHS:
        for r in RESOLUTIONS:
            assert (w, (r, r)) in slimmable.calibrated(model)
    assert slimmable.get_width(model) == 1.0
    # A row's sub-network, rebuilt from the kept statistics, reproduces its top-1.
    sub = slimmable.subnetwork(model, 0.5, resolution=16)
    val = pipelines.get_dataset("digits", "val", 16, 64, training=False)
    row = next(r for r in table if (r["width"], r["resolution"]) == (0.5, 16))
    assert qt.top1(sub, val, 16) == pytest.approx(row["top1"])


def test_own_data_and_latency(trained):
    """Callables / mappings per resolution instead of specs; latency of one tiny config."""
    model, _ = trained
    train = {8: pipelines.get_dataset("digits", "train", 8, 64, training=True, seed=1)}
    rows = qt.query_table(
        model, lambda r: pipelines.get_dataset("digits", "val", r, 64, training=False),
        [0.25], [8], calibration=train, num_calibration_images=128, latency=True,
        latency_repeats=3, progress=False)
    (row,) = rows
    assert tuple(row) == qt.ROW_KEYS
    assert isinstance(row["latency_ms"], float) and row["latency_ms"] > 0
    with pytest.raises(ValueError, match="not 16x16"):
        qt.query_table(model, lambda r: None, [0.25], [16], progress=False, latency=False,
                       calibration=lambda r: train[8])


def test_registered_model():
    """The untrained us_resnet20_cifar (residual adds, three stages) at two widths."""
    model = models.get("us_resnet20_cifar", classes=10, input_shape=(None, None, 3))
    small, full = qt.query_table(model, "digits", [0.25, 1.0], [8], latency=False,
                                 num_calibration_images=64, progress=False)
    assert 10 < full["macs"] / small["macs"] < 20 and full["params"] > small["params"]
    assert 0.0 <= small["top1"] <= 1.0


def test_bad_input_fails_before_work(trained):
    model, _ = trained

    def no_work(resolution):
        raise AssertionError("data were requested before the arguments were checked")

    def fails(match, **kwargs):
        args = {"dataset": no_work, "widths": [0.5], "resolutions": [8],
                "calibration": no_work, "latency": False, "progress": False, **kwargs}
        with pytest.raises(ValueError, match=match):
            qt.query_table(model, **args)

    fails("widths is empty", widths=[])
    fails("repeat 0.5", widths=[0.5, 0.25, 0.5])
    fails(r"outside the range \[0.25, 1\]", widths=[0.2, 0.5])
    fails("resolutions is empty", resolutions=[])
    fails(r"resolutions repeat \[8\]", resolutions=[8, 8])
    fails("positive integers", resolutions=[8.5])
    fails("calibration is needed", calibration=None)
    fails("split applies", split="test")
    fails("data_dir apply", data_dir="/data")
    fails("no batches for resolutions", calibration={16: []})
    fails("must be a data set spec", dataset=42)
    static = tiny_slimmable()
    static = keras.Model(inp := keras.Input((16, 16, 3)), static(inp))
    with pytest.raises(ValueError, match="not resolution 8"):
        qt.query_table(static, no_work, [0.5], [8], calibration=no_work, progress=False)


def test_best_config_and_front():
    def row(w, r, macs, top1, latency=None):
        return {"width": w, "resolution": r, "macs": macs, "params": 1, "top1": top1,
                "latency_ms": latency}

    table = [row(1.0, 32, 100, 0.90, 5.0), row(0.5, 32, 40, 0.80, 2.0),
             row(1.0, 24, 60, 0.85, 3.0), row(0.75, 24, 45, 0.85, 2.5),
             row(0.25, 24, 10, 0.50, 1.0)]
    assert qt.best_config(table)["macs"] == 100
    assert qt.best_config(table, max_macs=70)["width"] == 0.75  # tie on top-1: fewer MACs
    assert qt.best_config(table, max_macs=44)["width"] == 0.5
    assert qt.best_config(table, max_latency_ms=2.4)["width"] == 0.5
    assert qt.best_config(table, max_macs=50, max_latency_ms=1.5)["width"] == 0.25
    with pytest.raises(ValueError, match="the smallest, width 0.25 at 24, needs 10 MACs"):
        qt.best_config(table, max_macs=5)
    with pytest.raises(ValueError, match="fastest, width 0.25 at 24, takes 1 ms"):
        qt.best_config(table, max_latency_ms=0.5)
    untimed = [dict(r, latency_ms=None) for r in table]
    with pytest.raises(ValueError, match="no row has latency_ms"):
        qt.best_config(untimed, max_latency_ms=10)
    partly = [*untimed[:4], table[4]]  # only the smallest was timed
    assert qt.best_config(partly, max_latency_ms=10)["width"] == 0.25
    with pytest.raises(ValueError, match="empty"):
        qt.best_config([])
    front = qt.pareto_front(table)
    assert [(r["width"], r["resolution"]) for r in front] == [(0.25, 24), (0.5, 32),
                                                              (0.75, 24), (1.0, 32)]


def test_export_signatures(trained, table, tmp_path):
    """Several configurations in one SavedModel (library), one signature each."""
    model, _ = trained
    subs = {export.signature_name(w, r): (slimmable.subnetwork(model, w, resolution=r), r)
            for w, r in ((1.0, 16), (0.25, 8))}
    assert list(subs) == ["width_1_res_16", "width_0_25_res_8"]
    path = export.export_saved_model_signatures(subs, tmp_path / "served")
    loaded = tf.saved_model.load(path)
    assert {"serving_default", *subs} <= set(loaded.signatures)
    for name, (sub, r) in subs.items():
        images = digits.load_digits_split("val", r)[0][:20].astype(np.float32)
        result = export.parity(sub, path, images, signature=name)
        assert result["max_abs_diff"] <= 1e-4 and result["top1_agreement"] == 1.0, result


def test_app_query_table(app_runs):
    _, stdout, _, path = finish(app_runs, "table")
    assert re.search(r"^\| width \| resolution \| MMACs", stdout, re.MULTILINE), stdout
    assert "best configuration: width" in stdout
    report = json.loads(path.read_text())
    assert report["split"] == "val" and report["dataset"] == "digits"
    assert report["model_path"].endswith("tiny_us.keras")
    rows = report["rows"]
    assert [(r["width"], r["resolution"]) for r in rows] == [
        (w, r) for r in (16, 8) for w in (0.5, 0.75, 1.0)]
    assert all(tuple(r) == qt.ROW_KEYS and r["latency_ms"] is None for r in rows)
    assert report["best"]["row"] == qt.best_config(rows, max_macs=0.1e6)
    with open(path.with_suffix(".csv"), newline="") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == len(rows) and tuple(lines[0]) == qt.ROW_KEYS
    assert int(lines[0]["macs"]) == rows[0]["macs"] and lines[0]["latency_ms"] == ""
    png = path.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.parametrize("name", ["tflite", "saved_model", "onnx"])
def test_app_exports_one_configuration(app_runs, name):
    _, stdout, _, path = finish(app_runs, name)
    assert f"width {EXPORT_WIDTH:g} at {EXPORT_SIZE}x{EXPORT_SIZE}: BatchNorm calibrated" in stdout
    assert f"input {EXPORT_SIZE}x{EXPORT_SIZE}" in stdout
    assert "on 100 digits test images" in stdout
    diff = float(re.search(r"^max abs diff: (\S+)$", stdout, re.MULTILINE).group(1))
    agreement = re.search(r"^top-1 agreement: (\S+)%$", stdout, re.MULTILINE).group(1)
    assert diff <= 1e-4 and float(agreement) == 100.0, stdout
    assert (path / "saved_model.pb").is_file() if name == "saved_model" else path.is_file()


def test_app_export_slimmable_needs_width(app_runs):
    returncode, _, stderr, path = finish(app_runs, "no_width", ok=False)
    assert returncode != 0 and not path.exists()
    assert "is slimmable (widths 0.25 to 1): pass --width and --resolution" in stderr


def test_int8_subnetwork_agrees_with_keras(trained):
    """A calibrated configuration exports to full-integer TFLite like every other model."""
    model, _ = trained
    train = pipelines.get_dataset("digits", "train", EXPORT_SIZE, 50, training=True, seed=0)
    sub = qt.calibrated_subnetwork(model, EXPORT_WIDTH, EXPORT_SIZE, train, CALIBRATION)
    images = export.take_images(train, 200)
    flatbuffer = export.to_tflite(sub, quantize="int8", representative_images=images[:100],
                                  image_size=EXPORT_SIZE)
    test = pipelines.get_dataset("digits", "test", EXPORT_SIZE, 50, training=False)
    result = export.parity(sub, flatbuffer, export.take_images(test, 200))
    assert result["top1_agreement"] >= 0.95, result
