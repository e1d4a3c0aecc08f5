"""The exact rewrites of `bl_keras.onnx_graph`, on small hand-made ONNX graphs run in ONNX
Runtime before and after: the same outputs, and each rewrite applies only where it is exact."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bl_keras import onnx_graph
from bl_keras.export import onnx_session

RNG = np.random.default_rng(0)


def make_model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run(model, x):
    session = onnx_session(model.SerializeToString())
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def resize_model(scales, mode="tf_half_pixel_for_nn"):
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="nearest",
                            coordinate_transformation_mode=mode, nearest_mode="floor")
    return make_model(
        [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)],
        [("roi", np.zeros(0, np.float32)), ("scales", np.asarray(scales, np.float32))])


def attributes(model):
    (node,) = model.graph.node
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 3, 2], [1, 1, 4, 1]])
def test_integer_nearest_resize_is_exact(scales):
    model = resize_model(scales)
    x = RNG.normal(size=(1, 2, 5, 3)).astype(np.float32)
    before = run(model, x)
    assert onnx_graph.integer_nearest_resize(model) == 1
    assert attributes(model)["coordinate_transformation_mode"] == b"asymmetric"
    np.testing.assert_array_equal(run(model, x), before)
    # The index rule it keeps: output row i reads input row i // s.
    np.testing.assert_array_equal(before[0, 0, :, 0], x[0, 0, np.arange(5 * scales[2])
                                                        // scales[2], 0])


def test_non_integer_or_rounded_resize_is_left_alone():
    fractional = resize_model([1, 1, 1.5, 2])
    assert onnx_graph.integer_nearest_resize(fractional) == 0
    assert attributes(fractional)["coordinate_transformation_mode"] == b"tf_half_pixel_for_nn"
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="nearest",
                            coordinate_transformation_mode="half_pixel")  # rounds, not floor
    rounded = make_model(
        [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)],
        [("roi", np.zeros(0, np.float32)), ("scales", np.float32([1, 1, 2, 2]))])
    assert onnx_graph.integer_nearest_resize(rounded) == 0


def preprocess_conv_model(shared_weights=False, channels=3):
    """images NHWC -> Sub(mean) -> Mul(1/std) -> Transpose -> Conv 3x3/2 pad 1 (+ bias)."""
    nodes = [
        helper.make_node("Sub", ["images", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "inv_std"], ["scaled"]),
        helper.make_node("Transpose", ["scaled"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["y"], pads=[1, 1, 1, 1],
                         strides=[2, 2], kernel_shape=[3, 3]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)]
    if shared_weights:
        nodes.append(helper.make_node("Identity", ["w"], ["w_copy"]))
        outputs.append(helper.make_tensor_value_info("w_copy", TensorProto.FLOAT, [None] * 4))
    return make_model(
        nodes, [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                              [None, 9, 7, channels])],
        outputs,
        [("mean", np.float32([123.7, 116.3, 103.5][:channels])),
         ("inv_std", np.float32([1 / 58.4, 1 / 57.1, 1 / 57.4][:channels])),
         ("w", RNG.normal(size=(4, channels, 3, 3)).astype(np.float32)),
         ("b", RNG.normal(size=4).astype(np.float32))])


def test_fold_input_scale_is_exact_with_zero_padding():
    model = preprocess_conv_model()
    x = RNG.uniform(0, 255, (2, 9, 7, 3)).astype(np.float32)
    before = run(model, x)
    assert onnx_graph.fold_input_scale(model)
    ops = [node.op_type for node in model.graph.node]
    assert ops == ["Transpose", "Sub", "Conv"]
    np.testing.assert_allclose(run(model, x), before, rtol=1e-5, atol=1e-5)
    mean = numpy_helper.to_array(next(i for i in model.graph.initializer
                                      if i.name == "mean_nchw"))
    assert mean.shape == (1, 3, 1, 1)
    assert "inv_std" not in {i.name for i in model.graph.initializer}


def test_fold_input_scale_leaves_shared_weights_and_other_graphs():
    shared = preprocess_conv_model(shared_weights=True)
    assert not onnx_graph.fold_input_scale(shared)
    assert [node.op_type for node in shared.graph.node][:2] == ["Sub", "Mul"]
    plain = resize_model([1, 1, 2, 2])
    assert not onnx_graph.fold_input_scale(plain)


def test_name_io():
    nodes = [helper.make_node("Add", ["x:0", "c"], ["Identity:0"])]
    model = make_model(
        nodes, [helper.make_tensor_value_info("x:0", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("Identity:0", TensorProto.FLOAT, [None, 3])],
        [("c", np.float32([1, 2, 3]))])
    onnx_graph.name_io(model, "images")
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["output_0"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    np.testing.assert_array_equal(run(model, np.zeros((2, 3), np.float32)),
                                  [[1, 2, 3], [1, 2, 3]])
    with pytest.raises(ValueError, match="one input and 2 outputs"):
        onnx_graph.name_io(model, "images", ("a", "b"))
