"""Universally slimmable CIFAR ResNets (US-Nets, Yu & Huang 2019) for MutualNet (seed 003,
section 3: mutual learning of width and resolution), on the networks of
`bl_keras.models.cifar`, small enough to train on small machines.

`us_resnet{20,32,44,56}_cifar` are `resnet{N}_cifar` and `us_bl_resnet{20,32,44,56}_cifar` are
`bl_resnet{N}_cifar` (the Big-Little versions: mutual learning of width and resolution on
Big-Little Net) with the same structure, layer order, Big-Little shortcut (AvgPool + 1x1 conv +
BN where the shape changes) and PyTorch padding. Only the layer kit differs: every convolution,
BatchNorm and the classifier is a `bl_keras.layers.slimmable` layer, and the blocks and the
Big-Little module are written out as one flat functional graph (residual additions by
`keras.layers.Add`, the merge by `UpsampleAdd`), because `bl_keras.slimmable.subnetwork`
replaces layer by layer and cannot reach into composite layers. At width 1.0 a model has the
parameters and MACs of its non-slimmable twin (272,474 for ResNet-20); at width w every layer
has `slim_channels(c, w, 1, divisor)` of its c channels. The stem keeps its 3 RGB inputs and the
classifier its `classes` outputs. BatchNorm follows US-Nets: batch statistics in training,
post-statistics (`calibrate_batch_norm`) per width in inference; the last BN of each block
starts with gamma = 0 as in the non-slimmable models.

The divisor defaults to 1 (`DEFAULT_DIVISOR`) instead of the ImageNet US-Nets' 8: CIFAR layers
have 8 to 64 channels, so with 8 a 16-channel layer has only two widths (8 and 16) over
[0.25, 1.0], and an 8-channel little branch (alpha 2) at 0.25 rounds its 2 channels up to 9,
above its full width, which `set_width` refuses with a ValueError naming the layer. With 1 every
layer runs over the whole default range and nearly every 0.05 step of the query table is a
different network. For width 1.0 to be the non-slimmable network, the divisor must divide every
channel count (16 // alpha for the little branches).
"""

import dataclasses

import keras
from keras import layers

from bl_keras.layers.big_little import MERGE_MODES
from bl_keras.layers.merge import UpsampleAdd
from bl_keras.layers.resample import UPSAMPLE_MODES
from bl_keras.layers.slimmable import (
    SlimmableBatchNormalization,
    SlimmableConv2D,
    SlimmableDense,
)
from bl_keras.models import common
from bl_keras.models.cifar import CIFAR_DEPTHS, CIFAR_FILTERS, MIN_IMAGE_SIZE

DEFAULT_DIVISOR = 1
DEFAULT_WIDTH_RANGE = (0.25, 1.0)


@dataclasses.dataclass(frozen=True)
class _Kit:
    """The slimmable layers of one model, sharing its width range and divisor."""

    width_range: tuple  # (min, max) widths every slimmable layer runs at
    divisor: int  # channel counts at a width are multiples of it

    def conv(self, x, filters, kernel_size, name, strides=1, slim_in=True):
        """Conv without bias, PyTorch padding: "same" at stride 1, explicit symmetric padding
        and "valid" when strided (as `bl_keras.layers.blocks.conv`)."""
        if strides != 1 and kernel_size > 1:
            x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        return SlimmableConv2D(
            filters, kernel_size, strides=strides, padding="same" if strides == 1 else "valid",
            use_bias=False, slim_in=slim_in, width_range=self.width_range,
            divisor=self.divisor, name=name)(x)

    def bn(self, x, name, zero_gamma=False):
        return SlimmableBatchNormalization(
            gamma_initializer="zeros" if zero_gamma else "ones",
            width_range=self.width_range, name=name)(x)

    def dense(self, x, units, activation, name):
        # float32 even under a mixed-precision policy, as `common.classifier_head`.
        return SlimmableDense(units, activation=activation, slim_out=False,
                              width_range=self.width_range, divisor=self.divisor,
                              dtype="float32", name=name)(x)


def _basic_block(x, in_filters, filters, strides, name, kit, last_relu=True):
    """`ResidualBlock(filters, "basic", strides, last_relu=...)` as functional layers: 3x3
    (stride) - BN - ReLU - 3x3 - BN (gamma 0), shortcut AvgPool(3, 2, pad 1) if strided and
    1x1 conv + BN if the channel count changes, add [, ReLU]. `in_filters` is the input's
    channel count at width 1.0 (the built one differs where the width range ends above 1)."""
    y = kit.conv(x, filters, 3, f"{name}_conv1", strides=strides)
    y = kit.bn(y, f"{name}_bn1")
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = kit.conv(y, filters, 3, f"{name}_conv2")
    y = kit.bn(y, f"{name}_bn2", zero_gamma=True)
    shortcut = x
    if strides == 2:
        shortcut = layers.ZeroPadding2D(1, name=f"{name}_downsample_pad")(shortcut)
        shortcut = layers.AveragePooling2D(3, strides=2, name=f"{name}_downsample_pool")(
            shortcut)
    if in_filters != filters:
        shortcut = kit.conv(shortcut, filters, 1, f"{name}_downsample_conv")
        shortcut = kit.bn(shortcut, f"{name}_downsample_bn")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out_relu")(y) if last_relu else y


def _basic_stage(x, in_filters, filters, blocks, strides, name, kit):
    for i in range(blocks):
        x = _basic_block(x, in_filters if i == 0 else filters, filters,
                         strides if i == 0 else 1, f"{name}_block{i + 1}", kit)
    return x


def _big_little_stage(x, in_filters, filters, blocks, alpha, beta, strides, upsample, name,
                      kit):
    """`BigLittleModule(filters, blocks, alpha, beta, strides, block_type="basic")` (two
    branches, merge by addition) as functional layers: a little branch of
    max(1, blocks // beta - 1) blocks of `filters // alpha` channels at full resolution, then a
    1x1 conv + BN to `filters`; a big branch of blocks - 1 blocks at half resolution, the first
    strided, the last without its final ReLU; the big output resized to the little one's size
    and added, ReLU, and a fusion block with the module's stride."""
    little_filters = filters // alpha
    little = x
    for i in range(max(1, blocks // beta - 1)):
        little = _basic_block(little, in_filters if i == 0 else little_filters, little_filters,
                              1, f"{name}_little_block{i + 1}", kit)
    if little_filters != filters:
        little = kit.conv(little, filters, 1, f"{name}_little_e_conv")
        little = kit.bn(little, f"{name}_little_e_bn")
    big = x
    depth = blocks - 1
    for i in range(depth):
        big = _basic_block(big, in_filters if i == 0 else filters, filters, 2 if i == 0 else 1,
                           f"{name}_big_block{i + 1}", kit, last_relu=i != depth - 1)
    merged = UpsampleAdd(upsample, name=f"{name}_merge")([big, little])
    merged = layers.ReLU(name=f"{name}_merge_relu")(merged)
    return _basic_block(merged, filters, filters, strides, f"{name}_fusion_block", kit)


def _check_big_little_args(big_little, alpha, beta, merge, upsample):
    """alpha, beta, merge and upsample with their defaults; they only apply to Big-Little
    models."""
    if not big_little:
        given = [(arg, value) for arg, value in (("alpha", alpha), ("beta", beta),
                                                 ("merge", merge), ("upsample", upsample))
                 if value is not None]
        if given:
            raise ValueError(f"{given[0][0]} applies to the Big-Little models "
                             f"(us_bl_resnet*_cifar) only, got {given[0][0]}={given[0][1]!r}")
        return None, None, None, None
    alpha = 2 if alpha is None else alpha
    beta = 4 if beta is None else beta
    merge = "add" if merge is None else merge
    upsample = "nearest" if upsample is None else upsample
    common.check_alpha_beta(alpha, beta)
    if CIFAR_FILTERS[0] // alpha < 1:
        raise ValueError(f"alpha={alpha} leaves no channels of filters={CIFAR_FILTERS[0]}")
    if merge not in MERGE_MODES:
        raise ValueError(f"merge must be one of {MERGE_MODES}, got {merge!r}")
    if merge != "add":
        # At width w the concatenated channels are slim(big) + slim(little), neither the first
        # channels of the full concatenation nor (by rounding) always slim(filters) wide.
        raise ValueError(f"the slimmable Big-Little models merge by addition only, got "
                         f"merge={merge!r}: a concatenation of two slimmed branches is not a "
                         "slimmed tensor")
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
    return alpha, beta, merge, upsample


def _check_weights(weights):
    if weights is None:
        return
    if isinstance(weights, dict) or not str(weights).endswith((".keras", ".weights.h5")):
        raise ValueError(f"weights must be None or a .keras / .weights.h5 file of a slimmable "
                         f"model (there are no official checkpoints to convert), got "
                         f"{weights!r}")


def build_us_cifar_resnet(
    depth,
    big_little=False,
    alpha=None,
    beta=None,
    merge=None,
    upsample=None,
    width_range=DEFAULT_WIDTH_RANGE,
    divisor=DEFAULT_DIVISOR,
    include_top=True,
    weights=None,
    input_shape=(32, 32, 3),
    pooling=None,
    classes=10,
    classifier_activation="softmax",
    include_preprocessing=True,
):
    """Universally slimmable ResNet-`depth` for 32x32 images; `big_little=True` gives the
    slimmable Big-Little version.

    Args:
        depth: 20, 32, 44 or 56.
        big_little: the Big-Little version (`bl_resnet{depth}_cifar`'s structure).
        alpha, beta, upsample: as `bl_resnet{depth}_cifar` (defaults 2, 4, "nearest"); Big-Little
            only.
        merge: "add" (the default; "concat" is refused: its two slimmed branches do not form a
            slimmed tensor); Big-Little only.
        width_range: (min, max) widths the model runs at; it is built at max.
        divisor: channel counts at a width are multiples of it (see the module docstring). A
            width that a layer cannot run raises a ValueError naming it at `set_width`.
        include_top, weights (None or a `.keras` / `.weights.h5` file of ours), input_shape,
            pooling, classes, classifier_activation, include_preprocessing: as keras.applications
            and `resnet{depth}_cifar`.

    Example:
        >>> from bl_keras import slimmable
        >>> model = us_resnet20_cifar()
        >>> slimmable.set_width(model, 0.5)  # then calibrate_batch_norm for inference
    """
    if depth not in CIFAR_DEPTHS:
        raise ValueError(f"depth must be one of {CIFAR_DEPTHS}, got {depth!r}")
    common.check_head_args(include_top, weights, classes)
    _check_weights(weights)
    alpha, beta, merge, upsample = _check_big_little_args(big_little, alpha, beta, merge,
                                                          upsample)
    kit = _Kit(tuple(float(w) for w in width_range), divisor)
    name = f"us_{'bl_' if big_little else ''}resnet{depth}_cifar"
    n = (depth - 2) // 6
    inputs = common.image_input(input_shape, MIN_IMAGE_SIZE, name)
    x = common.check_image_size(MIN_IMAGE_SIZE, name)(inputs)
    x = common.preprocess(x, include_preprocessing)
    x = kit.conv(x, CIFAR_FILTERS[0], 3, "stem_conv", slim_in=False)
    x = kit.bn(x, "stem_bn")
    x = layers.ReLU(name="stem_relu")(x)
    channels = CIFAR_FILTERS[0]
    if big_little:
        for stage, strides in zip(range(2), (2, 1)):
            x = _big_little_stage(x, channels, CIFAR_FILTERS[stage], n, alpha, beta, strides,
                                  upsample, f"stage{stage + 1}", kit)
            channels = CIFAR_FILTERS[stage]
        x = _basic_stage(x, channels, CIFAR_FILTERS[2], n, 2, "stage3", kit)
    else:
        for stage in range(3):
            x = _basic_stage(x, channels, CIFAR_FILTERS[stage], n, 1 if stage == 0 else 2,
                             f"stage{stage + 1}", kit)
            channels = CIFAR_FILTERS[stage]
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        outputs = kit.dense(x, classes, classifier_activation, "predictions")
    else:
        outputs = common.classifier_head(x, False, pooling, classes, classifier_activation)
    model = keras.Model(inputs, outputs, name=name)
    return common.load_weights(model, weights)


def _builder(depth, big_little):
    def builder(**kwargs):
        return build_us_cifar_resnet(depth, big_little=big_little, **kwargs)

    builder.__name__ = f"us_{'bl_' if big_little else ''}resnet{depth}_cifar"
    builder.__doc__ = build_us_cifar_resnet.__doc__
    return builder


us_resnet20_cifar = _builder(20, False)
us_resnet32_cifar = _builder(32, False)
us_resnet44_cifar = _builder(44, False)
us_resnet56_cifar = _builder(56, False)
us_bl_resnet20_cifar = _builder(20, True)
us_bl_resnet32_cifar = _builder(32, True)
us_bl_resnet44_cifar = _builder(44, True)
us_bl_resnet56_cifar = _builder(56, True)

MODELS = (us_resnet20_cifar, us_resnet32_cifar, us_resnet44_cifar, us_resnet56_cifar,
          us_bl_resnet20_cifar, us_bl_resnet32_cifar, us_bl_resnet44_cifar, us_bl_resnet56_cifar)
