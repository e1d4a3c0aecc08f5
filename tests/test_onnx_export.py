"""ONNX export (`bl_keras.export.to_onnx`) of an ImageNet-size model at a small input and of a
speech model, checked in ONNX Runtime; models that cannot be exported; the official-model
plumbing of the ONNX speed comparison (`bl_keras.official`, `bl_keras.timing.External`).
The CIFAR-size model trained on digits, and `apps.export --format=onnx`, are in test_export.py.
"""

import textwrap

import keras
import numpy as np
import onnx
import pytest
from conftest import REFERENCE

from bl_keras import benchmark, export, models, official, timing
from bl_keras import convert as weights

BL_RESNET50 = REFERENCE / "bl_resnet50"


def graph_of(onnx_bytes):
    return onnx.load_from_string(onnx_bytes).graph


def test_imagenet_model_reproduces_official_logits_at_an_odd_size():
    """bL-ResNet-50 with the official reference weights at 200x200 (branches of 13 and 25 at a
    merge, so the odd-size nearest gather is exported too): ONNX Runtime gives the official
    logits, and Keras' within 1e-4, at any batch size."""
    model = models.bl_resnet50(include_preprocessing=False, classifier_activation=None,
                               input_shape=(200, 200, 3))
    weights.load_official_weights(model, BL_RESNET50 / "bl_resnet50_state_dict_fp16.npz")
    onnx_model = export.to_onnx(model)
    graph = graph_of(onnx_model)
    assert [i.name for i in graph.input] == ["images"]
    assert [o.name for o in graph.output] == ["output_0"]
    with np.load(BL_RESNET50 / "bl_resnet50_io.npz") as io:
        image = np.transpose(io["input_odd_nchw"], (0, 2, 3, 1))
        expected = io["logits_odd"]
    got = export.onnx_predict(onnx_model, image)
    assert np.abs(got - expected).max() <= 1e-3  # the reference's structural threshold
    rng = np.random.default_rng(0)
    images = np.concatenate([image, rng.normal(size=(2, 200, 200, 3)).astype(np.float32)])
    result = export.parity(model, onnx_model, images, batch_size=2)  # batches of 2, then 1
    print(result)
    assert result["max_abs_diff"] <= 1e-4 and result["top1_agreement"] == 1.0


def test_speech_model_exports_with_features_input():
    model = models.bl_resnet22_speech(alpha=2, beta=3, classes=4, width_multiplier=1 / 16,
                                      classifier_activation=None)
    onnx_model = export.to_onnx(model, image_size=(64, 56))
    (inp,) = graph_of(onnx_model).input
    assert inp.name == "features"
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 64, 56, 3]
    features = np.random.default_rng(1).normal(size=(5, 64, 56, 3)).astype(np.float32)
    result = export.parity(model, onnx_model, features, batch_size=4)
    assert result["max_abs_diff"] <= 1e-4 and result["top1_agreement"] == 1.0
    with pytest.raises(ValueError, match=r"images must be \[N, 64, 56, 3\]"):
        export.onnx_predict(onnx_model, features[:, :, :50])


@keras.saving.register_keras_serializable(package="test_onnx_export")
class SingularValues(keras.layers.Layer):
    """Singular values of the channels' spatial matrices: TF's Svd has no tf2onnx conversion."""

    def call(self, x):
        return keras.ops.linalg.svd(keras.ops.transpose(x, (0, 3, 1, 2)), compute_uv=False)


def test_models_that_cannot_be_exported_say_why():
    inputs = keras.Input((5, 5, 3))
    model = keras.Model(inputs, SingularValues()(inputs), name="svd_model")
    with pytest.raises(export.UnsupportedOpsError, match="'svd_model'.*tf2onnx.*Svd") as error:
        export.to_onnx(model)
    assert error.value.ops == ["Svd"]
    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    two = keras.Model([a, b], keras.layers.Add()([a, b]))
    with pytest.raises(ValueError, match="single image input"):
        export.to_onnx(two)
    dynamic = models.resnet20_cifar(input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="dynamic input size"):
        export.to_onnx(dynamic)


def fake_checkout(tmp_path):
    """A directory laid out as IBM/BigLittleNet whose `blresnet_model` builds a tiny network
    (the real code is not part of this repository or reachable from CI)."""
    package = tmp_path / "BigLittleNet" / "models"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .blresnet import blresnet_model\n")
    (package / "blresnet.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        def blresnet_model(depth, alpha, beta, num_classes=1000):
            return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, num_classes))
    """))
    return package.parent


def test_official_model_is_timed_beside_ours_in_one_run(tmp_path):
    torch_model = official.build(fake_checkout(tmp_path), "bl_resnet50")
    onnx_model = official.to_onnx(torch_model, size=32)
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    import torch

    with torch.no_grad():
        expected = torch_model(torch.from_numpy(official.normalise(images))).numpy()
    session = export.onnx_session(onnx_model)
    got = session.run(None, {"input": official.normalise(images)})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    ours = models.bl_resnet20_cifar(classes=10)
    timings = timing.measure({"ours": ours, benchmark.OFFICIAL: official.external(onnx_model,
                                                                                   size=32)},
                             runtimes=("tflite",), batches=(2, 1), repeats=2,
                             latency_repeats=2, progress=False)
    # The official model only on its own runtime (added to the runs), ours on every one asked.
    assert {(t.model, t.runtime) for t in timings} == {
        ("ours", "tflite"), (benchmark.OFFICIAL, "onnx")}
    table = benchmark.official_table(timings, "ours", 2)
    assert "throughput, batch 2 (img/s)" in table and "latency, batch 1 (ms)" in table
    assert "(tflite)" in table and "(onnx)" in table


def test_official_code_must_be_a_checkout(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkout of IBM/BigLittleNet"):
        official.build(tmp_path, "bl_resnet50")
    with pytest.raises(ValueError, match="no official model for 'resnet50'"):
        official.build(fake_checkout(tmp_path), "resnet50")
