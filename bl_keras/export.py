"""Deployment exports of Keras image models: a uint8 SavedModel for serving, TFLite
flatbuffers (float32, float16 weights or full int8) for phones and ONNX for ONNX Runtime on
servers, with parity checks against Keras.

>>> from bl_keras import export
>>> export.export_saved_model(model, "served/")              # doctest: +SKIP
>>> flatbuffer = export.to_tflite(model, quantize="int8",     # doctest: +SKIP
...                               representative_images=train_images[:200])
>>> export.parity(model, flatbuffer, test_images)             # doctest: +SKIP
{'max_abs_diff': 1.75, 'top1_agreement': 0.997, 'count': 360}
>>> onnx_bytes = export.to_onnx(model)                        # doctest: +SKIP
>>> export.parity(model, onnx_bytes, test_images)["max_abs_diff"]  # doctest: +SKIP
2.1e-06

TFLite conversion goes through a SavedModel export (the route that folds BatchNorm into the
convolutions) and allows builtin ops only, so a model needing TF (select) ops fails here with
`UnsupportedOpsError` rather than on a phone.

A slimmable model (MutualNet, seed 003) exports one configuration at a time: its
`bl_keras.query_table.calibrated_subnetwork` (ordinary layers, calibrated BatchNorm) exports as
above; `export_saved_model_signatures` puts several configurations in one SavedModel, one
serving signature each (`signature_name`).

Speech acoustic models (input named "features": log-mel windows `[64, frames, 3]`) export the
same way, except that their inputs stay float32 everywhere (there is no uint8 form of
normalised log-mels); "image" below then means such a window, and `image_size` is
`(64, frames)`.
"""

import contextlib
import logging
import numbers
import os
import pathlib
import re
import tempfile

import keras
import numpy as np

from bl_keras._tensorflow import require_tensorflow

tf = require_tensorflow("bl_keras.export (SavedModel, TFLite and ONNX export)")

QUANTIZE = ("none", "float16", "int8")
SERVING_KEY = "serving_default"
# Phrases of the converter's message when an op has no builtin TFLite kernel.
_UNSUPPORTED_MARKERS = (
    "neither a custom op nor a flex op",
    "not supported by the native TFLite runtime",
    "ops are not supported",
)


class UnsupportedOpsError(ValueError):
    """The model needs ops that TFLite's builtin op set lacks (they would need TF select ops),
    or, from `to_onnx`, ops that tf2onnx cannot convert.

    Attributes:
        ops: names of the offending TF ops (e.g. `["tf.MatrixDeterminant"]` for TFLite,
            `["Svd"]` for ONNX), as far as the converter's message names them.
    """

    def __init__(self, message, ops=()):
        super().__init__(message)
        self.ops = list(ops)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def takes_features(model):
    """True for a speech model (float log-mel input named "features"), False for images."""
    return bool(model.inputs) and model.inputs[0].name.split(":")[0] == "features"


def serving_dtype(model):
    """What the SavedModel signature takes: uint8 images, or float32 log-mel features."""
    return tf.float32 if takes_features(model) else tf.uint8


def input_spec(model, image_size=None, dtype=tf.float32):
    """The `tf.TensorSpec` `[None, H, W, C]` of the model's images for an export.

    Args:
        model: a single-input Keras image model (NHWC).
        image_size: int or (height, width); needed when the model's input size is dynamic, and
            must agree with it when it is static.
        dtype: dtype of the spec.

    Returns:
        A `tf.TensorSpec` with a dynamic batch dimension, named "images" ("features" for a
        speech model).

    Raises:
        ValueError: several inputs, not NHWC, a dynamic size without `image_size`, or an
            `image_size` that contradicts the model's static size.
    """
    shape = model.input_shape
    if not (isinstance(shape, tuple) and all(d is None or isinstance(d, int) for d in shape)):
        raise ValueError(f"export needs a model with a single image input, got input shapes "
                         f"{shape!r}")
    if len(shape) != 4:
        raise ValueError(f"export needs NHWC image inputs (rank 4), got input shape {shape!r}")
    static = shape[1:3]
    if image_size is not None:
        size = (image_size, image_size) if _is_int(image_size) else tuple(image_size)
        if len(size) != 2 or not all(_is_int(s) and s > 0 for s in size):
            raise ValueError(f"image_size must be a positive int or (height, width), got "
                             f"{image_size!r}")
        size = tuple(int(s) for s in size)
        for have, want in zip(static, size):
            if have is not None and have != want:
                raise ValueError(f"image_size {image_size!r} contradicts the input size "
                                 f"{static[0]}x{static[1]} of model {model.name!r}")
    elif None in static:
        raise ValueError(f"model {model.name!r} has a dynamic input size {shape[1:]}: pass "
                         "image_size (int or (height, width)) to fix the exported size")
    else:
        size = static
    name = "features" if takes_features(model) else "images"
    return tf.TensorSpec([None, *size, shape[3] or 3], dtype, name=name)


def _write_saved_model(model, path, spec):
    """SavedModel at `path` whose "serve" / serving_default endpoint takes `spec` images,
    casts them to float32 and returns the model's outputs in inference mode."""
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        return model(tf.cast(images, tf.float32), training=False)

    archive.add_endpoint("serve", serve, input_signature=[spec])
    archive.write_out(str(path), verbose=False)


def export_saved_model(model, path, image_size=None):
    """Writes a SavedModel for serving that takes uint8 RGB images (float32 log-mel features
    [None, 64, frames, 3], input key "features", for a speech model).

    Its default signature (`serving_default`, also callable as `.serve` after
    `tf.saved_model.load`) takes uint8 images `[None, H, W, 3]` (input key "images") of the
    model's static input size, casts them to float32 (bl_keras models normalise inside) and returns
    the model's outputs ("output_0" in the signature's dict).

    Args:
        model: a Keras image model taking RGB float in [0, 255].
        path: directory to write.
        image_size: int or (height, width); required when the model's input size is dynamic.

    Returns:
        `path` as a string.

    Raises:
        ValueError: see `input_spec`.
    """
    _write_saved_model(model, path, input_spec(model, image_size, serving_dtype(model)))
    return str(path)


def signature_name(width, resolution):
    """The SavedModel signature name of a slimmable configuration: "width_0_5_res_160"."""
    return f"width_{width:g}_res_{resolution}".replace(".", "_")


def _serving_fn(model):
    def serve(images):
        return model(tf.cast(images, tf.float32), training=False)

    return serve


def export_saved_model_signatures(models, path):
    """Writes one SavedModel with a uint8 serving signature per model (each as
    `export_saved_model` makes it); the first is also `serving_default`. Each model's
    variables are saved once per signature (there is no sharing between sub-networks).

    Args:
        models: mapping signature name (a Python identifier, e.g. `signature_name(w, r)`) ->
            (Keras image model, image_size or None for its static size).
        path: directory to write.

    Returns:
        `path` as a string.
    """
    models = dict(models)
    if not models:
        raise ValueError("export_saved_model_signatures needs at least one model")
    archive = keras.export.ExportArchive()
    for name, (model, image_size) in models.items():
        if not str(name).isidentifier():
            raise ValueError(f"signature names must be Python identifiers, got {name!r}")
        if takes_features(model):
            raise ValueError(f"signature {name!r}: several signatures are for image models")
        archive.track(model)
        archive.add_endpoint(name, _serving_fn(model),
                             input_signature=[input_spec(model, image_size, tf.uint8)])
    archive.write_out(str(path), verbose=False)
    return str(path)


def _calibration_images(representative_images, spec):
    """The representative images as a list of float32 [1, H, W, C] arrays (checked)."""
    if representative_images is None:
        raise ValueError('quantize="int8" needs representative_images (float images in '
                         "[0, 255] from the training data) to calibrate activation ranges")
    images = []
    for item in representative_images:
        item = np.asarray(item, np.float32)
        batch = item[None] if item.ndim == 3 else item
        if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(spec.shape[1:]):
            raise ValueError(f"representative images must be [H, W, C] or [N, H, W, C] with "
                             f"H, W, C = {tuple(spec.shape[1:])}, got shape {item.shape}")
        images += [image[None] for image in batch]
    if not images:
        raise ValueError('quantize="int8" needs at least one representative image, got none')
    return images


def _unsupported_ops_error(model, error):
    message = str(error)
    ops = sorted(set(re.findall(r"'(tf\.\w+)' op is neither", message))
                 | set(re.findall(r"^\s*(tf\.\w+)\(", message, re.MULTILINE)))
    return UnsupportedOpsError(
        f"model {model.name!r} needs TF ops that TFLite's builtin op set lacks: "
        f"{', '.join(ops) or '(see the converter message below)'}. Running it would need TF "
        "select ops (the Flex delegate), which LiteRT on phones does not ship by default; "
        "replace the layers using them.\nConverter message:\n" + message,
        ops,
    )


def to_tflite(model, quantize="none", representative_images=None, image_size=None,
              workdir=None):
    """TFLite flatbuffer of `model`, through a SavedModel export, builtin ops only.

    The flatbuffer takes float32 images `[batch, H, W, 3]` in [0, 255] (batch dynamic, 1 by
    default) and returns the model's outputs in float32, whatever `quantize` is: with "int8"
    the quantize/dequantize steps are inside the flatbuffer, so callers feed the same inputs as
    to the Keras model.

    Args:
        model: a Keras image model taking RGB float in [0, 255].
        quantize: "none" (float32), "float16" (float16 weights, about half the size; float
            compute) or "int8" (full-integer quantization of weights and activations: only
            int8 builtin kernels are allowed, so an op without one fails here).
        representative_images: for "int8": an array [N, H, W, 3] or an iterable of [H, W, 3] or
            [n, H, W, 3] float images in [0, 255], from the training data, that calibrate the
            activation ranges (a few hundred are plenty).
        image_size: int or (height, width); required when the model's input size is dynamic.
        workdir: where to put the temporary SavedModel (default: the system's temp dir).

    Returns:
        The flatbuffer as bytes.

    Raises:
        ValueError: unknown `quantize`, "int8" without representative images, bad sizes.
        UnsupportedOpsError: (a ValueError) the model needs ops TFLite builtins lack.
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    spec = input_spec(model, image_size, tf.float32)
    calibration = None
    if quantize == "int8":
        calibration = _calibration_images(representative_images, spec)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = pathlib.Path(tmp) / "saved_model"
        _write_saved_model(model, path, spec)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(path))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = lambda: ([image] for image in calibration)
        try:
            return converter.convert()
        except Exception as error:  # the converter's ConverterError is not public API
            if any(marker in str(error) for marker in _UNSUPPORTED_MARKERS):
                raise _unsupported_ops_error(model, error) from error
            raise


ONNX_OPSET = 17


# Attributes that keep a nested function from being inlined: Keras' TF backend runs grouped
# convolutions (ResNeXt) as a nested XLA-compiled function (TF has no grouped conv kernel on
# CPU), which would reach tf2onnx as an opaque StatefulPartitionedCall.
_NO_INLINE_ATTRS = ("_XlaMustCompile", "_XlaCompile", "_XlaScope", "_noinline")


def _inlinable_frozen_graph(concrete):
    """(GraphDef, input names, output names) of a traced function with its variables and
    captured constants frozen into Const nodes and every nested function inlinable."""
    from tensorflow.python.framework import convert_to_constants  # what tf2onnx itself uses

    frozen = convert_to_constants.convert_variables_to_constants_v2(
        concrete, lower_control_flow=False, aggressive_inlining=True)
    graph_def = frozen.graph.as_graph_def()
    node_lists = [graph_def.node, *(function.node_def for function in graph_def.library.function)]
    attr_maps = [node.attr for nodes in node_lists for node in nodes]
    attr_maps += [function.attr for function in graph_def.library.function]
    for attrs in attr_maps:
        for name in _NO_INLINE_ATTRS:
            if name in attrs:
                del attrs[name]
    return (graph_def, [t.name for t in frozen.inputs if t.dtype != tf.resource],
            [t.name for t in frozen.outputs])


def to_onnx(model, image_size=None, opset=ONNX_OPSET, optimize=True):
    """ONNX model (serialized `onnx.ModelProto` bytes) of a Keras image or speech model, for
    ONNX Runtime on servers.

    The same input contract as `to_tflite`: float32 NHWC images `[batch, H, W, 3]` in [0, 255]
    named "images", with the model's preprocessing inside (log-mel windows named "features" for
    a speech model); the batch dimension is dynamic ("batch"); the output is "output_0". The
    model is traced with `resize_merges()`, frozen (weights and the preprocessing's constants
    become constants, so the image is the only input), converted with tf2onnx and rewritten by
    `bl_keras.onnx_graph.optimize` (exact rewrites that ONNX Runtime runs faster).

    Args:
        model: a single-input Keras model taking RGB float in [0, 255] (or log-mel features).
        image_size: int or (height, width); required when the model's input size is dynamic.
        opset: ONNX opset of the graph.
        optimize: False leaves out the speed rewrites (merges traced as for TF, tf2onnx's
            graph as it is but for the names): for comparison.

    Returns:
        The ONNX model as bytes (write them to a `.onnx` file, or pass them to
        `onnx_session` / `onnx_predict` / `parity`).

    Raises:
        ValueError: see `input_spec`.
        UnsupportedOpsError: (a ValueError) the model needs TF ops tf2onnx cannot convert.
    """
    import onnx
    import tf2onnx

    from bl_keras import onnx_graph
    from bl_keras.layers.resample import resize_merges

    spec = input_spec(model, image_size, tf.float32)
    function = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    with resize_merges() if optimize else contextlib.nullcontext():
        concrete = function.get_concrete_function()
    graph_def, inputs, outputs = _inlinable_frozen_graph(concrete)
    tf2onnx_log = logging.getLogger("tf2onnx")
    level = tf2onnx_log.level
    tf2onnx_log.setLevel(logging.WARNING)  # hundreds of INFO lines per conversion
    try:
        proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs,
                                                  output_names=outputs, opset=opset)
    finally:
        tf2onnx_log.setLevel(level)
    # tf2onnx leaves a TF op it cannot convert in the graph as is (and logs it).
    unconverted = sorted({node.op_type for node in proto.graph.node
                          if not onnx.defs.has(node.op_type, node.domain)})
    if unconverted:
        raise UnsupportedOpsError(
            f"model {model.name!r} needs TF ops that tf2onnx cannot convert to ONNX (opset "
            f"{opset}): {', '.join(unconverted)}; replace the layers using them.", unconverted)
    onnx_graph.optimize(proto, spec.name, rewrites=optimize)
    return proto.SerializeToString()


def onnx_session(onnx_model, num_threads=None, spinning=True):
    """An ONNX Runtime CPU session of ONNX bytes or a `.onnx` path, on `num_threads` threads
    (default one per core), with every graph optimization on.

    `spinning=False` makes its idle threads sleep instead of busy-waiting for the next run:
    needed when several sessions take turns (interleaved timing), where one session's spinning
    threads would otherwise take the cores from the next (measured here: bL-ResNet-50 at batch
    1 went from 45-53 ms to 17 ms with two sessions alternating on 2 cores)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads or os.cpu_count()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # its warnings about initializers it folded away
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = bytes(onnx_model) if isinstance(onnx_model, (bytes, bytearray)) else str(onnx_model)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_predict(onnx_model, images, batch_size=32):
    """Runs an ONNX model from `to_onnx` (bytes, `.onnx` path or `onnx_session`) on float
    images [N, H, W, C] in [0, 255], `batch_size` per run; float32 numpy outputs [N, ...]
    (a list, in output order, for several outputs)."""
    session = onnx_model if hasattr(onnx_model, "run") else onnx_session(onnx_model)
    (inp,) = session.get_inputs()
    images = np.asarray(images, np.float32)
    want = [d if isinstance(d, int) else None for d in inp.shape[1:]]
    if images.ndim != 4 or any(w is not None and w != h for w, h in zip(want, images.shape[1:])):
        raise ValueError(f"images must be [N, {', '.join(map(str, want))}] for this ONNX "
                         f"model, got shape {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parts = [session.run(None, {inp.name: images[start:start + batch_size]})
             for start in range(0, len(images), batch_size)]
    arrays = [np.concatenate([p[i] for p in parts]) if parts else np.zeros((0,), np.float32)
              for i in range(len(session.get_outputs()))]
    return arrays[0] if len(arrays) == 1 else arrays


def is_tflite(flatbuffer_or_path):
    """Whether bytes or a file are a TFLite flatbuffer (file identifier "TFL3")."""
    if isinstance(flatbuffer_or_path, (bytes, bytearray)):
        head = bytes(flatbuffer_or_path[:8])
    else:
        with open(flatbuffer_or_path, "rb") as f:
            head = f.read(8)
    return head[4:8] == b"TFL3"


def take_images(dataset, count):
    """The first `count` images of a batched (images, labels) dataset, as float32 numpy."""
    parts, have = [], 0
    for images, _ in dataset:
        if have >= count:
            break
        parts.append(images.numpy()[: count - have])
        have += len(parts[-1])
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def interpreter(flatbuffer_or_path, num_threads=None):
    """A LiteRT interpreter of a flatbuffer (bytes) or a .tflite path, on `num_threads` threads
    (default: one per core; LiteRT's own default of one thread halves its speed on 2 cores)."""
    from ai_edge_litert.interpreter import Interpreter

    threads = num_threads or os.cpu_count()
    if isinstance(flatbuffer_or_path, (bytes, bytearray)):
        return Interpreter(model_content=bytes(flatbuffer_or_path), num_threads=threads)
    return Interpreter(model_path=str(flatbuffer_or_path), num_threads=threads)


def _quantize(x, detail):
    scale, zero_point = detail["quantization"]
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer) or scale == 0:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y, detail):
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(y.dtype, np.integer) or scale == 0:
        return y.astype(np.float32, copy=False)
    return (y.astype(np.float32) - zero_point) * np.float32(scale)


def tflite_predict(flatbuffer_or_path, images, batch_size=1):
    """Runs a TFLite flatbuffer on images with LiteRT (one thread per core).

    Args:
        flatbuffer_or_path: flatbuffer bytes or a `.tflite` path.
        images: float images [N, H, W, C] in [0, 255] (the model's input size).
        batch_size: images per invocation (the input's batch dimension is resized to it).
            Quantized (integer) inputs and outputs, if a flatbuffer has them, are converted
            with their scale and zero point.

    Returns:
        float32 numpy outputs [N, ...]; a list of them, in the flatbuffer's output order, for
        a model with several outputs.
    """
    runner = interpreter(flatbuffer_or_path)
    (inp,) = runner.get_input_details()
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(inp["shape"][1:]):
        raise ValueError(f"images must be [N, {', '.join(map(str, inp['shape'][1:]))}] for "
                         f"this flatbuffer, got shape {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    runner.allocate_tensors()
    outputs = runner.get_output_details()
    results = [[] for _ in outputs]
    current = inp["shape"][0]
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        if len(chunk) != current:
            runner.resize_tensor_input(inp["index"], [len(chunk), *inp["shape"][1:]])
            runner.allocate_tensors()
            current = len(chunk)
        runner.set_tensor(inp["index"], _quantize(chunk, inp))
        runner.invoke()
        for result, detail in zip(results, outputs):
            result.append(_dequantize(runner.get_tensor(detail["index"]), detail))
    arrays = [np.concatenate(r) if r else np.zeros((0,), np.float32) for r in results]
    return arrays[0] if len(arrays) == 1 else arrays


def saved_model_predict(saved_model, images, batch_size=64, signature=SERVING_KEY):
    """Runs a serving signature (default `serving_default`) of a SavedModel from
    `export_saved_model` or `export_saved_model_signatures`.

    Args:
        saved_model: its directory, or the object `tf.saved_model.load` returned.
        images: images [N, H, W, C], uint8 or values in [0, 255] (rounded and clipped to
            uint8 when the signature takes uint8; passed as float32 when it takes float32
            speech features).
        batch_size: images per call.

    Returns:
        float numpy outputs [N, ...] of the signature's single output; a dict of them by
        output name if it has several.
    """
    loaded = tf.saved_model.load(str(saved_model)) if isinstance(
        saved_model, (str, os.PathLike)) else saved_model
    if signature not in loaded.signatures:
        raise ValueError(f"the SavedModel has no signature {signature!r} (it has "
                         f"{sorted(loaded.signatures)})")
    serve = loaded.signatures[signature]
    (spec,) = serve.structured_input_signature[1].values()
    images = to_uint8(images) if spec.dtype == tf.uint8 else np.asarray(images, np.float32)
    parts = {}
    for start in range(0, len(images), batch_size):
        out = serve(tf.constant(images[start:start + batch_size]))
        for key, value in out.items():
            parts.setdefault(key, []).append(value.numpy())
    arrays = {key: np.concatenate(value) for key, value in parts.items()}
    return next(iter(arrays.values())) if len(arrays) == 1 else arrays


def to_uint8(images):
    """Images in [0, 255] as uint8 (rounded, clipped), as a uint8 serving signature takes."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def keras_predict(model, images, batch_size=64):
    """The Keras model's outputs on float images, as numpy, through `model.predict` (a traced
    graph like the exports'; eager calls differ from it by float32 rounding, ~1e-6 here).

    Args:
        model: a Keras model.
        images: float images [N, H, W, C] in [0, 255].
        batch_size: images per step.
    """
    return model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)


def parity(model, flatbuffer, images, batch_size=32, signature=SERVING_KEY):
    """How closely an export reproduces the Keras model on `images`.

    Args:
        model: the single-output Keras model that was exported.
        flatbuffer: TFLite flatbuffer bytes or `.tflite` path; ONNX bytes or `.onnx` path
            from `to_onnx` (run in ONNX Runtime); or a SavedModel directory from
            `export_saved_model` (an image model's uint8 signature then gets the images
            rounded to uint8, and Keras gets the same rounded images as float32).
        images: float images [N, H, W, C] in [0, 255].
        batch_size: images per TFLite / ONNX / SavedModel call.
        signature: the SavedModel signature to compare (default `serving_default`).

    Returns:
        {"max_abs_diff": largest absolute difference of the outputs (float),
         "top1_agreement": fraction of images whose argmax agrees, "count": N}.
    """
    images = np.asarray(images)
    if len(images) == 0:
        raise ValueError("parity needs at least one image")
    if not isinstance(flatbuffer, (bytes, bytearray)) and os.path.isdir(flatbuffer):
        if serving_dtype(model) == tf.uint8:
            images = to_uint8(images)
        got = saved_model_predict(flatbuffer, images, batch_size, signature)
    elif is_tflite(flatbuffer):
        got = tflite_predict(flatbuffer, images, batch_size)
    else:
        got = onnx_predict(flatbuffer, images, batch_size)
    if isinstance(got, (list, dict)):
        raise ValueError("parity compares single-output models; the export has "
                         f"{len(got)} outputs")
    expected = keras_predict(model, images.astype(np.float32), batch_size)
    if got.shape != expected.shape:
        raise ValueError(f"export outputs {got.shape} but Keras {expected.shape}")
    agree = np.argmax(got, axis=-1) == np.argmax(expected, axis=-1)
    return {
        "max_abs_diff": float(np.max(np.abs(got - expected))),
        "top1_agreement": float(np.mean(agree)),
        "count": len(images),
    }
