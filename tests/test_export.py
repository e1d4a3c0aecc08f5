"""Deployment exports (`bl_keras.export`, `apps.export`) of a bL-ResNet-20 trained on digits.

One model is trained per test session (a few epochs on scikit-learn's digits at 32x32, >= 90%
test accuracy) and each export is made once, whichever test worker needs it first; the checks
compare the exports with Keras on the held-out test split.
"""

import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from conftest import made_once

import pipelines
from bl_keras import export, models
from pipelines import digits

REPO = pathlib.Path(__file__).resolve().parents[1]
EPOCHS = 8
BATCH = 32


@pytest.fixture(scope="module")
def data():
    train_images, _ = digits.load_digits_split("train", image_size=32)
    test_images, test_labels = digits.load_digits_split("test", image_size=32)
    return {
        "train": train_images.astype(np.float32),
        "test": test_images.astype(np.float32),
        "test_uint8": test_images,
        "test_labels": test_labels,
    }


def train(path, data):
    """Trains bl_resnet20_cifar (logits) on digits to >= 90% test accuracy, saves it at path."""
    keras.utils.set_random_seed(0)
    dataset = pipelines.get_dataset("digits", "train", 32, BATCH, training=True, seed=0)
    model = models.bl_resnet20_cifar(classes=10, input_shape=(32, 32, 3),
                                     classifier_activation=None)
    steps = EPOCHS * (len(data["train"]) // BATCH)
    model.compile(
        optimizer=keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.1, steps),
                                       momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(dataset, epochs=EPOCHS, verbose=0)
    logits = export.keras_predict(model, data["test"])
    accuracy = float(np.mean(np.argmax(logits, -1) == data["test_labels"]))
    print(f"digits test accuracy of the trained model: {accuracy:.4f}")
    assert accuracy >= 0.9, accuracy
    model.save(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """(model, path of its .keras file): bl_resnet20_cifar logits, >= 90% test accuracy;
    trained once for all the test workers."""
    path = made_once(tmp_path_factory, "bl_resnet20_digits.keras",
                     lambda path: train(path, data))
    return keras.saving.load_model(path), path


def exported_once(tmp_path_factory, name, export_fn):
    """The bytes `export_fn()` returns, made once for all the test workers."""
    return made_once(tmp_path_factory, name,
                     lambda path: path.write_bytes(export_fn())).read_bytes()


@pytest.fixture(scope="module")
def flatbuffers(tmp_path_factory, trained, data):
    model, _ = trained
    options = {
        "none": {},
        "float16": {"quantize": "float16"},
        "int8": {"quantize": "int8", "representative_images": data["train"][:200]},
    }
    return {name: exported_once(tmp_path_factory, f"digits_{name}.tflite",
                                lambda kwargs=kwargs: export.to_tflite(model, **kwargs))
            for name, kwargs in options.items()}


def tensor_dtypes(flatbuffer):
    """{tensor index: numpy dtype} of every tensor of a flatbuffer, plus its input and output
    tensor indices."""
    interpreter = Interpreter(model_content=flatbuffer, num_threads=os.cpu_count())
    dtypes = {d["index"]: np.dtype(d["dtype"]) for d in interpreter.get_tensor_details()}
    io = {d["index"] for d in interpreter.get_input_details() + interpreter.get_output_details()}
    return dtypes, io


def test_float32_tflite_matches_keras(trained, flatbuffers, data):
    model, _ = trained
    result = export.parity(model, flatbuffers["none"], data["test"])
    print(f"float32 TFLite: {result}, {len(flatbuffers['none']):,} bytes")
    assert result["count"] == len(data["test"])
    assert result["max_abs_diff"] <= 1e-4, result
    assert result["top1_agreement"] == 1.0, result
    dtypes, _ = tensor_dtypes(flatbuffers["none"])
    assert set(dtypes.values()) <= {np.dtype("float32"), np.dtype("int32")}


def test_tflite_predict_batches_and_files(trained, flatbuffers, data, tmp_path):
    # Batches of 7 leave a remainder (360 = 51 * 7 + 3); a path works like the bytes.
    path = tmp_path / "model.tflite"
    path.write_bytes(flatbuffers["none"])
    one = export.tflite_predict(flatbuffers["none"], data["test"][:50])
    batched = export.tflite_predict(str(path), data["test"], batch_size=7)
    assert one.shape == (50, 10) and batched.shape == (len(data["test"]), 10)
    np.testing.assert_allclose(batched[:50], one, atol=1e-4)
    expected = export.keras_predict(trained[0], data["test"])
    assert np.abs(batched - expected).max() <= 1e-4
    with pytest.raises(ValueError, match="images must be"):
        export.tflite_predict(flatbuffers["none"], data["test"][:2, :16, :16])


def test_int8_tflite_is_integer_and_agrees(trained, flatbuffers, data):
    model, _ = trained
    flatbuffer = flatbuffers["int8"]
    result = export.parity(model, flatbuffer, data["test"])
    print(f"int8 TFLite: {result}, {len(flatbuffer):,} bytes "
          f"({len(flatbuffer) / len(flatbuffers['none']):.2f} of float32)")
    assert result["top1_agreement"] >= 0.95, result
    dtypes, io = tensor_dtypes(flatbuffer)
    # float32 only at the model's inputs and outputs (the images and logits, quantized and
    # dequantized inside); weights and activations int8, biases int32.
    floats = {i for i, dtype in dtypes.items() if dtype == np.float32}
    assert floats <= io, floats
    assert set(dtypes.values()) <= {np.dtype(t) for t in ("int8", "int32", "float32")}
    int8 = sum(dtype == np.int8 for dtype in dtypes.values())
    assert int8 >= 0.5 * len(dtypes), (int8, len(dtypes))
    assert len(flatbuffer) < 0.4 * len(flatbuffers["none"])


def test_float16_tflite_is_half_size_and_close(trained, flatbuffers, data):
    model, _ = trained
    result = export.parity(model, flatbuffers["float16"], data["test"])
    ratio = len(flatbuffers["float16"]) / len(flatbuffers["none"])
    print(f"float16 TFLite: {result}, {len(flatbuffers['float16']):,} bytes ({ratio:.3f} of "
          "float32)")
    assert 0.4 <= ratio <= 0.6, ratio
    assert result["max_abs_diff"] <= 0.1, result
    assert result["top1_agreement"] >= 0.99, result
    dtypes, _ = tensor_dtypes(flatbuffers["float16"])
    assert np.dtype("float16") in set(dtypes.values())


def test_saved_model_takes_uint8(trained, data, tmp_path):
    model, _ = trained
    path = export.export_saved_model(model, tmp_path / "served")
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8
    assert spec.shape.as_list() == [None, 32, 32, 3]
    images = data["test_uint8"]
    expected = export.keras_predict(model, images.astype(np.float32))
    (served,) = signature(tf.constant(images)).values()
    diff = float(np.abs(served.numpy() - expected).max())
    eager = float(np.abs(served.numpy() - model(images.astype(np.float32))).max())
    print(f"SavedModel serving_default vs Keras: max abs diff {diff:.3g} (predict), "
          f"{eager:.3g} (eager call)")
    assert diff <= 1e-5
    np.testing.assert_allclose(loaded.serve(tf.constant(images[:5])).numpy(), expected[:5],
                               atol=1e-5)
    result = export.parity(model, path, images)
    assert result["max_abs_diff"] <= 1e-5 and result["top1_agreement"] == 1.0, result


def small_model(input_shape=(None, None, 3), extra=None):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3)(inputs)
    if extra is not None:
        x = extra(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def test_dynamic_input_size_needs_image_size(tmp_path):
    model = small_model()
    with pytest.raises(ValueError, match="dynamic input size"):
        export.export_saved_model(model, tmp_path / "served")
    with pytest.raises(ValueError, match="dynamic input size"):
        export.to_tflite(model)
    with pytest.raises(ValueError, match="contradicts"):
        export.to_tflite(small_model((8, 8, 3)), image_size=16)
    flatbuffer = export.to_tflite(model, image_size=(12, 10))
    images = np.random.default_rng(0).uniform(0, 255, (4, 12, 10, 3)).astype(np.float32)
    assert export.parity(model, flatbuffer, images)["max_abs_diff"] <= 1e-4


@keras.saving.register_keras_serializable(package="test_export")
class Determinant(keras.layers.Layer):
    """Determinants of the channels' spatial matrices: tf.linalg.det is MatrixDeterminant,
    which has no TFLite builtin kernel (TF 2.21), only a TF select (Flex) one."""

    def call(self, x):
        return tf.linalg.det(tf.transpose(x, [0, 3, 1, 2]))[:, None, None, :]


def test_ops_outside_tflite_builtins_fail_at_export():
    model = small_model((5, 5, 3), Determinant())
    with pytest.raises(export.UnsupportedOpsError, match="MatrixDeterminant") as error:
        export.to_tflite(model)
    assert error.value.ops == ["tf.MatrixDeterminant"]
    assert isinstance(error.value, ValueError)
    assert "select" in str(error.value)
    # The op itself is fine for TFLite with TF select ops: the failure is the builtins rule.
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf.function(model).get_concrete_function(tf.TensorSpec([1, 5, 5, 3]))], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    assert converter.convert()


def test_bad_arguments():
    model = small_model((8, 8, 3))
    with pytest.raises(ValueError, match="'int4'"):
        export.to_tflite(model, quantize="int4")
    with pytest.raises(ValueError, match="representative_images"):
        export.to_tflite(model, quantize="int8")
    with pytest.raises(ValueError, match="at least one representative image"):
        export.to_tflite(model, quantize="int8", representative_images=[])
    with pytest.raises(ValueError, match="representative images must be"):
        export.to_tflite(model, quantize="int8",
                         representative_images=np.zeros((2, 16, 16, 3), np.float32))


def run_app(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    process = subprocess.run([sys.executable, "-m", "apps.export", *args], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    print(process.stdout)
    diff = re.search(r"^max abs diff: (\S+)$", process.stdout, re.MULTILINE)
    agreement = re.search(r"^top-1 agreement: (\S+)%$", process.stdout, re.MULTILINE)
    assert diff and agreement, process.stdout
    assert "on 360 digits test images" in process.stdout
    return float(diff.group(1)), float(agreement.group(1)) / 100


def test_app_int8_tflite(trained, tmp_path):
    _, model_path = trained
    output = tmp_path / "model_int8.tflite"
    diff, agreement = run_app(f"--model_path={model_path}", f"--output={output}",
                              "--format=tflite", "--quantize=int8", "--calibration_images=100")
    assert output.is_file()
    assert agreement >= 0.95, agreement
    dtypes, _ = tensor_dtypes(output.read_bytes())
    assert np.dtype("int8") in set(dtypes.values())


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory, trained):
    model, _ = trained
    return exported_once(tmp_path_factory, "digits.onnx", lambda: export.to_onnx(model))


def test_onnx_takes_the_image_alone_and_matches_keras(trained, onnx_model, data):
    """The issue's bug: Keras' own `model.export(format="onnx")` of a model normalising inside
    makes the normalisation constants extra required inputs. Ours takes the image alone."""
    import onnx

    model, _ = trained
    graph = onnx.load_from_string(onnx_model).graph
    assert [i.name for i in graph.input] == ["images"]
    dims = [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 32, 32, 3]
    ops = [node.op_type for node in graph.node]
    # The rewrites applied: merges as integer resizes, the scale folded into the stem conv.
    assert ops[:3] == ["Transpose", "Sub", "Conv"] and "Mul" not in ops[:4]
    resizes = [node for node in graph.node if node.op_type == "Resize"]
    assert len(resizes) == 2 and all(
        onnx.helper.get_attribute_value(a) == b"asymmetric" for node in resizes
        for a in node.attribute if a.name == "coordinate_transformation_mode")
    result = export.parity(model, onnx_model, data["test"], batch_size=50)  # last batch: 10
    print(result)
    assert result["count"] == 360
    assert result["max_abs_diff"] <= 1e-4 and result["top1_agreement"] == 1.0
    one = export.onnx_predict(onnx_model, data["test"][:3], batch_size=1)
    np.testing.assert_allclose(one, export.keras_predict(model, data["test"][:3]), atol=1e-4)
    # Without the speed rewrites (benchmarks/onnx_export.py's comparison): still the image
    # alone and the same outputs, merges as TF traces them.
    plain = export.to_onnx(model, optimize=False)
    graph = onnx.load_from_string(plain).graph
    assert [i.name for i in graph.input] == ["images"]
    assert "Resize" not in {node.op_type for node in graph.node}
    assert export.parity(model, plain, data["test"][:64])["max_abs_diff"] <= 1e-4


def test_app_onnx(trained, tmp_path):
    _, model_path = trained
    output = tmp_path / "model.onnx"
    diff, agreement = run_app(f"--model_path={model_path}", f"--output={output}",
                              "--format=onnx")
    assert output.is_file() and not export.is_tflite(output)
    assert diff <= 1e-4 and agreement == 1.0, (diff, agreement)


def test_app_saved_model(trained, tmp_path):
    _, model_path = trained
    output = tmp_path / "served"
    diff, agreement = run_app(f"--model_path={model_path}", f"--output={output}",
                              "--format=saved_model")
    assert (output / "saved_model.pb").is_file()
    assert diff <= 1e-5 and agreement == 1.0, (diff, agreement)
