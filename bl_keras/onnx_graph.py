"""Rewrites of the ONNX graph tf2onnx makes of a Keras model, each exact (the same numbers up to
float32 rounding), that make it run as fast in ONNX Runtime as a model written for NCHW.

- `integer_nearest_resize`: TF's nearest resize converts to `Resize` with the deprecated
  `tf_half_pixel_for_nn` coordinates, which ONNX Runtime runs with a generic kernel and keeps out
  of its blocked (NCHWc) layout, so every Big-Little merge pays two layout conversions. For
  integer scale factors the half-pixel source index `floor((i + 0.5) / s)` equals the asymmetric
  `floor(i / s)` (`i = q s + r`, `0 <= r < s`: both are `q`), so the node is rewritten to the
  asymmetric form, which the blocked layout's `Upsample` runs in place.
- `fold_input_scale`: the in-model preprocessing `(x - mean) / std` runs on the NHWC input as
  two broadcasts over a last axis of 3 (slow kernels). The scale goes into the first convolution's
  weights (`conv(pad0(x * d)) = conv_{W d}(pad0(x))`: zero padding commutes with a per-channel
  scale) and the mean subtraction moves after the layout transpose, where it broadcasts over
  whole planes.
- `name_io`: the input keeps its name ("images" / "features"), the output is "output_0" as in
  our SavedModels, and the batch dimension is called "batch".

Only the `onnx` package is needed here (no TensorFlow).
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper

NHWC_TO_NCHW = [0, 3, 1, 2]


def _consumers(graph):
    found = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    for output in graph.output:
        found.setdefault(output.name, []).append(None)
    return found


def _initializers(graph):
    return {init.name: init for init in graph.initializer}


def _constant(graph, name):
    """The value of initializer `name`, or None if it is not a constant of the graph."""
    init = _initializers(graph).get(name)
    return None if init is None else numpy_helper.to_array(init)


def _attribute(node, name, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _set_attribute(node, name, value):
    for attribute in list(node.attribute):
        if attribute.name == name:
            node.attribute.remove(attribute)
    node.attribute.append(helper.make_attribute(name, value))


def integer_nearest_resize(model):
    """Rewrites nearest `Resize` nodes with half-pixel coordinates and constant positive
    integer scales to asymmetric coordinates (see the module docstring). Returns how many."""
    graph = model.graph
    count = 0
    for node in graph.node:
        if node.op_type != "Resize" or _attribute(node, "mode", b"nearest") != b"nearest":
            continue
        mode = _attribute(node, "coordinate_transformation_mode", b"half_pixel")
        if mode not in (b"tf_half_pixel_for_nn", b"half_pixel"):
            continue
        if mode == b"half_pixel" and _attribute(node, "nearest_mode",
                                                b"round_prefer_floor") != b"floor":
            continue  # half_pixel + rounding is not the floor rule
        scales = _constant(graph, node.input[2]) if len(node.input) > 2 else None
        if (scales is None or scales.size == 0 or np.any(scales < 1)
                or np.any(scales != np.round(scales))):
            continue
        _set_attribute(node, "coordinate_transformation_mode", "asymmetric")
        _set_attribute(node, "nearest_mode", "floor")
        count += 1
    return count


def _per_channel(value, channels):
    """`value` as a [channels] vector if it broadcasts per channel over NHWC, else None."""
    if value is None:
        return None
    value = np.asarray(value, np.float32)
    if value.size == 1:
        return np.full(channels, value.reshape(()), np.float32)
    if value.shape[-1] != channels or value.size != channels:
        return None
    return value.reshape(channels)


def fold_input_scale(model):
    """input -> Sub(mean) -> Mul(1/std) -> Transpose(to NCHW) -> Conv becomes
    input -> Transpose -> Sub(mean) -> Conv(weights * 1/std). Returns whether it applied."""
    graph = model.graph
    if len(graph.input) != 1:
        return False
    consumers = _consumers(graph)
    image = graph.input[0].name
    chain = []
    name = image
    for op in ("Sub", "Mul", "Transpose", "Conv"):
        nodes = consumers.get(name, [])
        if len(nodes) != 1 or nodes[0] is None or nodes[0].op_type != op:
            return False
        chain.append(nodes[0])
        name = nodes[0].output[0]
    sub, mul, transpose, conv = chain
    dims = graph.input[0].type.tensor_type.shape.dim
    channels = dims[-1].dim_value if len(dims) == 4 else 0
    if (not channels or sub.input[0] != image or mul.input[0] != sub.output[0]
            or list(_attribute(transpose, "perm", [])) != NHWC_TO_NCHW
            or conv.input[0] != transpose.output[0] or _attribute(conv, "group", 1) != 1):
        return False
    mean = _per_channel(_constant(graph, sub.input[1]), channels)
    scale = _per_channel(_constant(graph, mul.input[1]), channels)
    weights = _constant(graph, conv.input[1])
    if mean is None or scale is None or weights is None or weights.shape[1] != channels:
        return False
    if len(consumers[conv.input[1]]) != 1:
        return False  # the weights are shared: leave them
    initializers = _initializers(graph)
    initializers[conv.input[1]].CopyFrom(numpy_helper.from_array(
        (weights * scale[None, :, None, None]).astype(weights.dtype), conv.input[1]))
    mean_name = sub.input[1] + "_nchw"
    graph.initializer.append(numpy_helper.from_array(
        mean.reshape(1, channels, 1, 1).astype(np.float32), mean_name))
    # image -> transpose -> sub -> conv
    transpose.input[0] = image
    sub.input[:] = [transpose.output[0], mean_name]
    conv.input[0] = sub.output[0]
    graph.node.remove(mul)
    order = [node for node in graph.node if node is not sub]
    order.insert(list(order).index(transpose) + 1, sub)
    del graph.node[:]
    graph.node.extend(order)
    _drop_unused_initializers(graph)
    return True


def _drop_unused_initializers(graph):
    used = set(_consumers(graph))
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)


def _rename_tensor(graph, old, new):
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def name_io(model, input_name, output_names=("output_0",), batch="batch"):
    """Names the single input `input_name`, the outputs `output_names` (in order) and their
    first (dynamic) dimension `batch`."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != len(output_names):
        raise ValueError(f"expected one input and {len(output_names)} outputs, got "
                         f"{[i.name for i in graph.input]} and {[o.name for o in graph.output]}")
    _rename_tensor(graph, graph.input[0].name, input_name)
    for output, name in zip(list(graph.output), output_names):
        _rename_tensor(graph, output.name, name)
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_param = batch


def optimize(model, input_name="images", rewrites=True):
    """`name_io`, and with `rewrites` the speed rewrites above, in place; returns
    {rewrite: count} of what applied."""
    applied = {}
    if rewrites:
        applied["integer_nearest_resize"] = integer_nearest_resize(model)
        applied["fold_input_scale"] = int(fold_input_scale(model))
    outputs = [f"output_{i}" for i in range(len(model.graph.output))]
    name_io(model, input_name, outputs)
    onnx.checker.check_model(model)
    return applied


__all__ = ["integer_nearest_resize", "fold_input_scale", "name_io", "optimize"]
