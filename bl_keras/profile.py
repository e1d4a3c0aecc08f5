"""Model complexity: trainable parameters and multiply-accumulates (MACs).

MACs are counted analytically per layer, from the layer's kernel and the shapes it sees when the
model is traced once at the requested input size by the Keras backend's own shape inference
(`tf.function` graph, `jax.eval_shape`, torch's meta device: nothing is computed), so the count is
the same on every backend and needs no TensorFlow. Counted:
convolutions of every kind (grouped, depthwise, separable, transposed) and dense layers, the
convention of the paper's "FLOPs" and of the official complexity table. BatchNorm, activations,
pooling, additions and resizes are not counted. TF's own profiler counts grouped convolutions
(lowered through XLA on CPU) and resizes as zero, so it is no substitute.

A custom layer with its own rule defines `count_macs(input_shape, output_shape) -> int`, which
is used instead of the rules below and stops the descent into its sublayers.
"""

import collections
import contextlib
import math

import keras
from keras.src import backend

MacRecord = collections.namedtuple("MacRecord", "path layer_type input_shape output_shape macs")


def count_params(model):
    """Trainable network parameters: BN moving statistics and other non-trainable state are
    excluded, and so are architecture weights (the mixing logits and depth weights of
    `MultiResConv` / `DepthMix`), as the papers' parameter counts do."""
    from bl_keras.layers.multires import network_weights

    return int(sum(math.prod(w.shape) for w in network_weights(model)))


def _layer_macs(layer, input_shape, output_shape):
    """MACs of one call of `layer` on one example, or None if the layer has no MAC rule."""
    if hasattr(layer, "count_macs"):
        return int(layer.count_macs(input_shape, output_shape))
    if isinstance(layer, keras.layers.SeparableConv2D):
        spatial_out = math.prod(output_shape[1:-1])
        return spatial_out * (
            math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape)
        )
    if isinstance(layer, (keras.layers.Conv2DTranspose, keras.layers.Conv1DTranspose,
                          keras.layers.Conv3DTranspose)):
        return math.prod(input_shape[1:-1]) * math.prod(layer.kernel.shape)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        return math.prod(output_shape[1:-1]) * math.prod(layer.kernel.shape)
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        return math.prod(output_shape[1:-1]) * math.prod(layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        return math.prod(input_shape[1:-1]) * math.prod(layer.kernel.shape)
    return None


def _counted_layers(model):
    """Layers whose calls are recorded: those with a MAC rule, outermost first."""
    found = []

    def visit(layer):
        for sub in layer._flatten_layers(include_self=False, recursive=False):
            if hasattr(sub, "count_macs") or _has_rule(sub):
                found.append(sub)
            else:
                visit(sub)

    visit(model)
    return found


def _has_rule(layer):
    return isinstance(
        layer,
        (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
         keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
         keras.layers.SeparableConv2D, keras.layers.Dense),
    )


@contextlib.contextmanager
def _recording(layers, records):
    def wrap(layer):
        original = layer.call

        def call(*args, **kwargs):
            outputs = original(*args, **kwargs)
            in_shape = tuple(args[0].shape)
            out_shape = tuple(outputs.shape)
            records.append(
                MacRecord(layer.path, type(layer).__name__, in_shape, out_shape,
                          _layer_macs(layer, in_shape, out_shape))
            )
            return outputs

        return call

    for layer in layers:
        object.__setattr__(layer, "call", wrap(layer))
    try:
        yield
    finally:
        for layer in layers:
            object.__delattr__(layer, "call")


def _input_shape(model, input_shape):
    model_shape = tuple(model.inputs[0].shape[1:])
    if input_shape is None:
        shape = model_shape
    elif isinstance(input_shape, int):
        shape = (input_shape, input_shape, *model_shape[2:])
    else:
        shape = tuple(input_shape)
        if len(shape) == len(model_shape) - 1:
            shape = (*shape, model_shape[-1])
    if len(shape) != len(model_shape) or any(d is None for d in shape):
        raise ValueError(
            f"count_macs needs a full input shape (the model's is {model_shape}), got "
            f"input_shape={input_shape!r}"
        )
    return shape


def mac_table(model, input_shape=None):
    """One `MacRecord` per counted layer call at `input_shape` (per example).

    `input_shape` is (H, W, C), (H, W), an int size, or None for the model's own static shape.
    """
    shape = _input_shape(model, input_shape)
    records = []

    def forward(x):
        records.clear()  # a backend may trace more than once; the last trace counts
        return model(x, training=False)

    # The backend's shape inference runs in a symbolic scope: shapes only, so a slimmable model
    # counts at a width whose BatchNorm statistics are not calibrated yet.
    with _recording(_counted_layers(model), records):
        backend.compute_output_spec(forward, keras.KerasTensor((1, *shape), model.inputs[0].dtype))
    return records


def count_macs(model, input_shape=None):
    """Multiply-accumulates of one forward pass of one example at `input_shape`."""
    return int(sum(r.macs for r in mac_table(model, input_shape) if r.macs))


def summarize(records, depth=2):
    """MACs grouped by the first `depth` parts of each layer path, largest first."""
    totals = collections.Counter()
    for r in records:
        totals["/".join(r.path.split("/")[:depth])] += r.macs or 0
    return totals.most_common()


__all__ = ["MacRecord", "count_macs", "count_params", "mac_table", "summarize"]
