"""Multi-resolution convolution that learns where to pool (seed 002): the whole method by name.

- Layers: `MultiResConv` (eq. 4-5) and `DepthMix` (eq. 6), in `bl_keras.layers.multires`.
- Models: `bl_keras.models.multires` (`multires_cifar` and the named models of Tables 1-4).
- Search: `bl_keras.training.methods.AlternatingSearch` (section 3.4), used by `model.fit`
  (`search_model`) and by `python -m apps.train --search=alternating`.
- Reading the result: `mixing_weights` (layers x levels), `depth_weights` and `learned_depth`
  (Table 3's LD), `level_macs`, `plot_mixing` (Fig. 3's heat map).
- Pruning (section 4.2): `prune(model, threshold=0.1)` keeps, per layer, the levels whose mixing
  weight is >= threshold (always the best one); `prune(model, keep_best=True)` keeps one level
  per layer and returns an ordinary CNN: pooling where the level rises from one layer to the
  next, upsampling where it falls, no mixing.

Reading of the learned depth: beta weighs the outputs of layers 2..L-1; LD is the number of
layers the strongest path uses, `argmax(beta) + 2` (layers 1..k, then the last layer): with 10
layers, a beta peaked on layer 7's output gives LD = 8.
"""

import keras
import numpy as np

from bl_keras.layers.multires import (
    DepthMix,
    MultiResConv,
    architecture_weights,
    network_weights,
)


def search_model(model, **kwargs):
    """`bl_keras.training.methods.search_model`: the model wrapped for the alternating search under
    `fit` (its train step is TensorFlow's, so this needs TensorFlow)."""
    from bl_keras.training import methods

    return methods.search_model(model, **kwargs)


def multires_layers(model):
    """The `MultiResConv` layers of `model` in call order."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, MultiResConv)]


def _require_multires(model):
    found = multires_layers(model)
    if not found:
        raise ValueError(f"model {model.name!r} has no MultiResConv layers")
    return found


def mixing_weights(model):
    """softmax(alpha) of every `MultiResConv` layer as a float32 array (layers x levels), zero
    at levels a layer does not compute."""
    found = _require_multires(model)
    table = np.zeros((len(found), max(layer.levels for layer in found)), np.float32)
    for row, layer in zip(table, found):
        row[list(layer.active)] = keras.ops.convert_to_numpy(layer.mixing_weights())
    return table


def _depth_mix(model):
    found = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, DepthMix)]
    return found[0] if found else None


def depth_weights(model):
    """softmax(beta) over the outputs of layers 2..L-1, or None without learned depth."""
    mix = _depth_mix(model)
    return None if mix is None else keras.ops.convert_to_numpy(mix.mixing_weights())


def learned_depth(model):
    """Table 3's LD: `argmax(beta) + 2` layers (layers 1..k and the last), None without
    learned depth."""
    beta = depth_weights(model)
    return None if beta is None else int(np.argmax(beta)) + 2


def level_macs(model, input_shape=None):
    """MACs of one example per (layer name, level) of every `MultiResConv` at `input_shape`.

    Each conv / dense call inside a MultiResConv is assigned to the level it ran at (its input's
    height is the layer input's height pooled r times; the squeeze-excite dense layers belong to
    the level of the depthwise conv before them)."""
    from bl_keras import profile

    found = {layer.path: layer for layer in _require_multires(model)}
    totals = {}
    level = None
    for record in profile.mac_table(model, input_shape):
        owner = next((p for p in found if record.path.startswith(p + "/")), None)
        if owner is None:
            continue
        if len(record.input_shape) == 4:
            level = _level_of(found[owner], record.input_shape[1])
        key = (found[owner].name, level)
        totals[key] = totals.get(key, 0) + (record.macs or 0)
    return totals


def _level_of(layer, height):
    for r in layer.active:
        if height == layer._level_heights.get(r):
            return r
    raise ValueError(f"no level of {layer.name!r} runs at height {height}")


def plot_mixing(model_or_weights, path, beta=None, title="Mixing weights softmax(alpha)"):
    """Fig. 3's heat map: softmax(alpha), layers x levels, with the values written in, and beta
    (learned depth) as a second panel when the model has it. Returns `path` (a PNG)."""
    from bl_keras import plots

    if isinstance(model_or_weights, keras.Model):
        weights = mixing_weights(model_or_weights)
        beta = depth_weights(model_or_weights) if beta is None else beta
    else:
        weights = np.asarray(model_or_weights)
    return plots.mixing_heatmap(weights, path, beta=beta, title=title)


EXAMPLE_SCALE = 1.2


def example_mixing(model, scale=EXAMPLE_SCALE):
    """Sets fixed non-uniform mixing logits on every `MultiResConv` of `model` (layer l peaked
    at level round((levels - 1) * l / (L - 1)), logits -scale * |r - peak|); returns `model`."""
    found = multires_layers(model)
    for index, layer in enumerate(found):
        peak = round((layer.levels - 1) * index / max(len(found) - 1, 1))
        logits = [-scale * abs(r - peak) for r in layer.active]
        layer.mixing_logits.assign(np.asarray(logits, np.float32))
    return model


def _kept_levels(layer, threshold, keep_best):
    weights = keras.ops.convert_to_numpy(layer.mixing_weights())
    best = int(np.argmax(weights))
    if keep_best:
        return [layer.active[best]]
    return [r for i, r in enumerate(layer.active) if weights[i] >= threshold or i == best]


def kept_levels(model, threshold=0.1, keep_best=False):
    """{layer name: the levels `prune(model, threshold, keep_best)` keeps}."""
    return {layer.name: _kept_levels(layer, threshold, keep_best)
            for layer in _require_multires(model)}


def _copy_multires(source, target):
    """Copies the shared block weights, the kept levels' BNs and their logits."""
    for name in ("conv", "expand", "depthwise", "se_reduce", "se_expand", "project"):
        if getattr(source, name, None) is not None:
            getattr(target, name).set_weights(getattr(source, name).get_weights())
    for r in target.active:
        for src, dst in zip(source.bns[r], target.bns[r]):
            dst.set_weights(src.get_weights())
    kept = [source.active.index(r) for r in target.active]
    target.mixing_logits.assign(keras.ops.convert_to_numpy(source.mixing_logits)[kept])


def prune(model, threshold=0.1, keep_best=False):
    """A new static Keras model with the pruned levels removed and the weights copied.

    Args:
        model: a model with `MultiResConv` layers (trained).
        threshold: keep the levels whose mixing weight softmax(alpha) is >= threshold (each
            layer keeps at least its best level); in (0, 1).
        keep_best: keep only the best level of every layer: the result is an ordinary CNN of
            Conv2D / BatchNormalization / pooling / upsampling layers without mixing, equal to
            the model with one level per layer at sizes divisible by 2^(levels - 1) (nearest
            upsampling; pooling where the level rises, upsampling where it falls).

    Returns:
        The pruned model (uncompiled). With a threshold, the kept levels keep their logits
        (the softmax renormalises over them); fine-tuning trains them with the network weights.

    Raises:
        ValueError: a threshold outside (0, 1), or a model without MultiResConv layers.
    """
    if not keep_best and (isinstance(threshold, bool) or not 0 < threshold < 1):
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    kept = kept_levels(model, threshold, keep_best)
    if keep_best:
        return _one_level_cnn(model, {name: levels[0] for name, levels in kept.items()})
    originals = {}

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, MultiResConv):
            config["active"] = kept[layer.name]
        new = type(layer).from_config(config)
        originals[id(new)] = layer
        return new

    pruned = keras.models.clone_model(model, clone_function=clone)
    for layer in pruned.layers:
        source = originals.get(id(layer))
        if isinstance(layer, MultiResConv):
            _copy_multires(source, layer)
        elif source is not None and source.weights:
            layer.set_weights(source.get_weights())
    return keras.Model(pruned.inputs, pruned.outputs, name=f"{model.name}_pruned")


def _one_level_cnn(model, levels):
    """`prune(keep_best=True)`: each MultiResConv becomes its block at its one level, as plain
    layers; tensors carry their level, and a layer whose level differs from its input's pools or
    upsamples first."""
    level_of = {}
    originals = {}

    def clone(layer):
        new = type(layer).from_config(layer.get_config())
        originals[id(new)] = layer
        return new

    def call(layer, *args, **kwargs):
        source = originals[id(layer)]
        if isinstance(source, MultiResConv):
            x = args[0]
            x = _resample(x, level_of.get(id(x), 0), levels[source.name], source)
            y = _plain_block(x, source, levels[source.name])
            level_of[id(y)] = levels[source.name]
            return y
        if isinstance(source, DepthMix):
            inputs = list(args[0])
            target = min(level_of.get(id(x), 0) for x in inputs)
            inputs = [_resample(x, level_of.get(id(x), 0), target, source, i)
                      for i, x in enumerate(inputs)]
            y = layer(inputs, **kwargs)
            layer.set_weights(source.get_weights())
            level_of[id(y)] = target
            return y
        y = layer(*args, **kwargs)
        if source.weights:
            layer.set_weights(source.get_weights())
        if args and id(args[0]) in level_of:
            level_of[id(y)] = level_of[id(args[0])]
        return y

    cnn = keras.models.clone_model(model, clone_function=clone, call_function=call)
    return keras.Model(cnn.inputs, cnn.outputs, name=f"{model.name}_one_level")


def _resample(x, level_in, level_out, layer, index=None):
    suffix = "" if index is None else f"_{index}"
    if level_out > level_in:
        factor = 2 ** (level_out - level_in)
        pool = (keras.layers.MaxPooling2D if getattr(layer, "pool", "max") == "max"
                else keras.layers.AveragePooling2D)
        return pool(factor, name=f"{layer.name}_pool{suffix}")(x)
    if level_out < level_in:
        factor = 2 ** (level_in - level_out)
        mode = getattr(layer, "upsample", "nearest")
        name = f"{layer.name}_upsample{suffix}"
        if x.shape[1] is not None and x.shape[2] is not None:
            # One RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR op in TFLite (UpSampling2D's
            # repeat becomes reshapes the converter cannot always legalise the next conv after).
            return keras.layers.Resizing(x.shape[1] * factor, x.shape[2] * factor,
                                         interpolation=mode, name=name)(x)
        return keras.layers.UpSampling2D(factor, interpolation=mode, name=name)(x)
    return x


def _plain_block(x, source, level):
    """`source`'s conv block at one level as plain Keras layers, with its weights."""
    name = source.name
    bns = source.bns[level]

    def bn(y, index, suffix):
        layer = keras.layers.BatchNormalization(
            momentum=bns[index].momentum, epsilon=bns[index].epsilon, center=False,
            scale=False, name=f"{name}_{suffix}")
        y = layer(y)
        layer.set_weights(bns[index].get_weights())
        return y

    def conv_like(y, sub, suffix):
        layer = type(sub).from_config({**sub.get_config(), "name": f"{name}_{suffix}"})
        y = layer(y)
        layer.set_weights(sub.get_weights())
        return y

    activation = keras.layers.Activation(source._activation, name=f"{name}_act")
    if source.block == "conv":
        return bn(activation(conv_like(x, source.conv, "conv")), 0, "bn")
    y, index = x, 0
    if source.expand is not None:
        y = bn(conv_like(y, source.expand, "expand"), 0, "expand_bn")
        y = keras.layers.Activation(source._activation, name=f"{name}_expand_act")(y)
        index = 1
    y = bn(conv_like(y, source.depthwise, "depthwise"), index, "depthwise_bn")
    y = activation(y)
    if source.se_reduce is not None:
        s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(y)
        s = conv_like(s, source.se_reduce, "se_reduce")
        s = conv_like(s, source.se_expand, "se_expand")
        y = keras.layers.Multiply(name=f"{name}_se_scale")([y, s])
    y = bn(conv_like(y, source.project, "project"), index + 1, "project_bn")
    if source.residual:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


__all__ = ["DepthMix", "EXAMPLE_SCALE", "MultiResConv", "architecture_weights", "depth_weights",
           "example_mixing", "kept_levels",
           "learned_depth", "level_macs", "mixing_weights", "multires_layers", "network_weights",
           "plot_mixing", "prune", "search_model"]
