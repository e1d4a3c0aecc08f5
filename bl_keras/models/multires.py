"""The CIFAR networks of seed 002 (multi-resolution convolution), Tables 1-4.

`multires_cifar(depth, filters, block)`: a multi-resolution layer (conv block) 3 -> C, depth - 2
layers C -> C with `block`, a multi-resolution layer (conv block) C -> classes, and global
average pooling, which gives the logits (no dense head), as the author code builds it. With
`learn_depth=True` the outputs of layers 2..L-1 are mixed by `DepthMix` (eq. 6) and feed the
last layer. Only the conv filters are parameters (the BNs have no scale or offset): 10 x 64 has
1,728 + 8 x 36,864 + 5,760 = 302,400 (Table 4's 0.3M), 8 x 128 899,712 (0.9M).

Named models of the paper's tables:

- `multires_10x64`, `multires_8x128`, `multires_eff_8x128` (Table 4; the last with MBConv6
  layers, Eff-Conv), `multires_10x64_depth`, `multires_20x64_depth` (Table 3, learned depth).
- Table 1 baselines: `multires_10x64_nopool` (every layer at full resolution: one level),
  `multires_10x64_uniform` (all four levels, fixed equal mixing: scale invariant) and
  `multires_10x64_predefined`, one level per layer by the rule "halve the resolution every 2-3
  layers". Fig. 3(a)'s list is not given; we chose levels `PREDEFINED_LEVELS` = 0, 0, 0, 1, 1,
  1, 2, 2, 3, 3 (three layers at 32x32, three at 16, two at 8, two at 4): 0.111 GMACs at 32x32
  against the paper's 0.26, which no configuration of this network reaches (see the README).
"""

import keras
from keras import layers

from bl_keras.layers.blocks import check_positive_int
from bl_keras.layers.multires import BLOCKS, DepthMix, MultiResConv
from bl_keras.models import common

PREDEFINED_LEVELS = (0, 0, 0, 1, 1, 1, 2, 2, 3, 3)


def multires_cifar(
    depth,
    filters,
    block="conv",
    levels=4,
    learn_depth=False,
    classes=10,
    mixing="learned",
    active=None,
    pool="max",
    upsample="nearest",
    input_shape=(32, 32, 3),
    include_preprocessing=True,
    classifier_activation="softmax",
    weights=None,
    name=None,
):
    """A multi-resolution CNN of `depth` layers of `filters` channels (seed 002's CIFAR net).

    Args:
        depth: L, the number of multi-resolution layers (>= 3).
        filters: C, the channels of every layer but the last.
        block: "conv" or "mbconv" for layers 2..L-1 (the first and last use the conv block).
        levels: R, resolutions per layer (4 at 32x32: 32, 16, 8, 4).
        learn_depth: mix the outputs of layers 2..L-1 with learned softmax weights beta (eq. 6).
        classes: outputs of the last layer (the logits after global average pooling).
        mixing: "learned" or "uniform" (fixed equal weights) for every layer.
        active: per layer, the levels it computes (a list of `depth` lists), or None for all.
        pool: "max" or "avg".
        upsample: "nearest" or "bilinear".
        input_shape: (H, W, 3); H and W at least 2^(levels - 1).
        include_preprocessing: the model takes RGB in [0, 255] and normalises inside.
        classifier_activation: applied to the pooled logits ("softmax", or None for logits).
        weights: None or a path to a `.keras` / `.weights.h5` file of this model.
        name: the model's name (default `multires_{depth}x{filters}`).

    Returns:
        A functional `keras.Model`; its layers are named `layer1` ... `layer{depth}`.
    """
    check_positive_int("depth", depth)
    check_positive_int("filters", filters)
    if depth < 3:
        raise ValueError(f"depth must be at least 3 (first, middle and last layer), got {depth!r}")
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
    common.check_head_args(True, weights, classes)
    if active is not None and len(active) != depth:
        raise ValueError(f"active must give the levels of each of the {depth} layers, got "
                         f"{len(active)}: {active!r}")
    name = name or f"multires_{depth}x{filters}"
    inputs = common.image_input(input_shape, 2 ** (levels - 1), f"{name} (levels={levels})")
    x = common.preprocess(inputs, include_preprocessing)

    def layer(index, width, layer_block):
        return MultiResConv(width, levels=levels, block=layer_block, pool=pool,
                            upsample=upsample, mixing=mixing,
                            active=None if active is None else active[index - 1],
                            name=f"layer{index}")

    x = layer(1, filters, "conv")(x)
    middle = []
    for index in range(2, depth):
        x = layer(index, filters, block)(x)
        middle.append(x)
    if learn_depth:
        x = DepthMix(mixing=mixing, name="depth_mix")(middle)
    x = layer(depth, classes, "conv")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool", dtype="float32")(x)
    if classifier_activation is not None:
        x = layers.Activation(classifier_activation, name="predictions", dtype="float32")(x)
    model = keras.Model(inputs, x, name=name)
    return common.load_weights(model, weights)


# The named models take every argument of `multires_cifar` as a keyword, their own values as
# defaults (e.g. `multires_10x64(filters=16)` for a narrow copy in a quick experiment).


def _named(name, depth, filters, block, kwargs, **defaults):
    arguments = {"depth": depth, "filters": filters, "block": block, "name": name, **defaults}
    return multires_cifar(**{**arguments, **kwargs})


def multires_10x64(**kwargs):
    """10 layers x 64 channels, 4 levels, learned mixing (Tables 1, 2 and 4): 302,400 params,
    0.411 GMACs at 32x32."""
    return _named("multires_10x64", 10, 64, "conv", kwargs)


def multires_8x128(**kwargs):
    """8 layers x 128 channels (Table 4): 899,712 params, 1.224 GMACs at 32x32."""
    return _named("multires_8x128", 8, 128, "conv", kwargs)


def multires_eff_8x128(**kwargs):
    """8 layers x 128 channels with MBConv6 middle layers (Table 4's Eff-Conv): 1,535,808
    params, 1.68 GMACs at 32x32."""
    return _named("multires_eff_8x128", 8, 128, "mbconv", kwargs)


def multires_10x64_nopool(**kwargs):
    """Table 1 row 1: every layer at full resolution (one level): 0.3097 GMACs."""
    return _named("multires_10x64_nopool", 10, 64, "conv", kwargs, levels=1)


def multires_10x64_uniform(**kwargs):
    """Table 1 row 3: four levels with fixed equal mixing (scale invariant)."""
    return _named("multires_10x64_uniform", 10, 64, "conv", kwargs, mixing="uniform")


def multires_10x64_predefined(**kwargs):
    """Table 1 row 2: one level per layer, `PREDEFINED_LEVELS` (halve every 2-3 layers)."""
    return _named("multires_10x64_predefined", 10, 64, "conv", kwargs,
                  active=[[r] for r in PREDEFINED_LEVELS])


def multires_10x64_depth(**kwargs):
    """Table 3, D = 10 with learned depth."""
    return _named("multires_10x64_depth", 10, 64, "conv", kwargs, learn_depth=True)


def multires_20x64_depth(**kwargs):
    """Table 3, D = 20 with learned depth."""
    return _named("multires_20x64_depth", 20, 64, "conv", kwargs, learn_depth=True)


MODELS = (multires_10x64, multires_8x128, multires_eff_8x128, multires_10x64_nopool,
          multires_10x64_uniform, multires_10x64_predefined, multires_10x64_depth,
          multires_20x64_depth)
