"""Universally slimmable MobileNets (US-Nets, Yu & Huang, ICCV 2019), the networks MutualNet
(Yang et al., ECCV 2020, seed 003) trains, and their plain fixed-width baselines.

Exact to the official code (taoyang1122/MutualNet `models/mobilenet_v1.py`, `mobilenet_v2.py`,
`slimmable_ops.py`, equal to JiahuiYu/slimmable_networks' US-Nets):

- `us_mobilenet_v1`: conv 3x3/2 32 + BN + ReLU6, 13 depthwise-separable blocks (depthwise 3x3 +
  BN + ReLU6, 1x1 + BN + ReLU6), global average pool, linear over the slimmed 1024 channels.
- `us_mobilenet_v2`: conv 3x3/2 32 + BN + ReLU6, 17 inverted residuals (1x1 expansion by t,
  none where t = 1; depthwise 3x3; 1x1 projection without ReLU; residual add where the stride
  is 1 and the channels do not change), 1x1 conv to 1280 channels (never slimmed) + BN + ReLU6,
  global average pool, linear. The expanded tensors follow MobileNetV2's ratio rule: expand
  conv ratio (1, t), depthwise follows, projection (t, 1), so 24 channels at width 0.45 expand
  to t * 24 = 96 channels (not 64).

Convolutions have no bias and PyTorch's symmetric padding (strided 3x3: ZeroPadding2D(1) +
"valid"); BatchNorm epsilon 1e-5; no dropout. A model is built at its largest width
(`width_range[1]`) and runs at any width of its range (`bl_keras.slimmable.set_width`): channels
at width w are `slim_channels(c, w, ratio, divisor)`, the first ones of every tensor. Every
BatchNorm, the 1280-wide one of V2's tail included, needs post-statistics per width and
resolution (`bl_keras.slimmable.calibrate_batch_norm`) before inference.

`mobilenet_v1(width)` / `mobilenet_v2(width)` are the same networks made of ordinary Keras
layers (Conv2D, DepthwiseConv2D, BatchNormalization with running statistics, Dense) at one
width, independently trainable (the paper's Fig. 6 baselines): the same builder with another
layer kit, so `mobilenet_v1(w)` has exactly the structure, parameters and MACs of
`slimmable.subnetwork(us_mobilenet_v1(), w)`. (V2 keeps 1280 tail channels at every width, as
the US-Net, unlike keras.applications' MobileNetV2 above width 1.0.)

Complexity (`bl_keras.profile`, conv and dense MACs), all equal to the official figures:

    model               width  params      MMACs at 224 / 192 / 160 / 128
    us_mobilenet_v1     0.25     470,072    41.0 /  30.2 /  21.1 /  13.6
    us_mobilenet_v1     1.0    4,231,976   568.7 / 418.1 / 290.7 / 186.4
    us_mobilenet_v2     0.35   1,677,128    59.3 /  43.9 /  30.9 /  20.2
    us_mobilenet_v2     1.0    3,504,872   300.8 / 221.3 / 154.1 /  99.1

Official weights: `weights=PATH` takes a MutualNet / US-Net checkpoint (`.pt`/`.pth`, read with
torch) or a `.npz` of the state dict (`bl_keras.convert.load_official_weights`); the
checkpoints carry no usable BatchNorm statistics, so calibrate after loading, as the official
code does. The released MutualNet MobileNetV2 weights were trained on widths [0.7, 1.0] only:
build `us_mobilenet_v2(width_range=(0.7, 1.0))` for them. The released V1 covers [0.25, 1.0].

>>> from bl_keras import models, slimmable
>>> model = models.us_mobilenet_v2(width_range=(0.7, 1.0), weights="v2.pt")  # doctest: +SKIP
>>> slimmable.calibrate_batch_norm(model, train_batches_at_160, width=0.7)  # doctest: +SKIP
"""

import dataclasses
import math

import keras
from keras import layers

from bl_keras.layers.blocks import BN_EPSILON, BN_MOMENTUM, conv_init, pad
from bl_keras.layers.slimmable import (
    DEFAULT_DIVISOR,
    SlimmableBatchNormalization,
    SlimmableConv2D,
    SlimmableDense,
    SlimmableDepthwiseConv2D,
    slim_channels,
)
from bl_keras.models import common

MIN_IMAGE_SIZE = 32
STEM_FILTERS = 32
V2_HEAD_FILTERS = 1280  # MobileNetV2's last 1x1 conv: never slimmed


@dataclasses.dataclass(frozen=True)
class Stage:
    channels: int  # output channels at width 1.0
    repeats: int  # blocks in the stage
    strides: int  # stride of the stage's first block
    expansion: int = 1  # MobileNetV2's expansion factor t (1: no expansion conv)


V1_STAGES = (Stage(64, 1, 1), Stage(128, 2, 2), Stage(256, 2, 2), Stage(512, 6, 2),
             Stage(1024, 2, 2))
V2_STAGES = (Stage(16, 1, 1, 1), Stage(24, 2, 2, 6), Stage(32, 3, 2, 6), Stage(64, 4, 2, 6),
             Stage(96, 3, 1, 6), Stage(160, 3, 2, 6), Stage(320, 1, 1, 6))


# Layer kits: the builder asks a kit for every layer that owns weights.


@dataclasses.dataclass(frozen=True)
class SlimmableKit:
    """The slimmable layers of a US-Net, built at `width_range[1]`."""

    width_range: tuple  # (min, max) widths the network runs at
    divisor: int  # channel counts are multiples of it

    def conv(self, filters, kernel_size, strides, padding, name, slim_in=True, slim_out=True,
             ratio=(1, 1)):
        return SlimmableConv2D(filters, kernel_size, strides=strides, padding=padding,
                               slim_in=slim_in, slim_out=slim_out, ratio=ratio,
                               divisor=self.divisor, width_range=self.width_range, name=name)

    def depthwise(self, kernel_size, strides, padding, name):
        return SlimmableDepthwiseConv2D(kernel_size, strides=strides, padding=padding,
                                        divisor=self.divisor, width_range=self.width_range,
                                        name=name)

    def batch_norm(self, name):
        return SlimmableBatchNormalization(epsilon=BN_EPSILON, width_range=self.width_range,
                                           name=name)

    def dense(self, units, activation, name, slim_in=True):
        return SlimmableDense(units, activation=activation, slim_in=slim_in, slim_out=False,
                              divisor=self.divisor, width_range=self.width_range,
                              dtype="float32", name=name)


@dataclasses.dataclass(frozen=True)
class PlainKit:
    """Ordinary Keras layers with the channel counts of one width (what `subnetwork` gives)."""

    width: float  # the network's fixed width
    divisor: int  # channel counts are multiples of it

    def conv(self, filters, kernel_size, strides, padding, name, slim_in=True, slim_out=True,
             ratio=(1, 1)):
        if slim_out:
            filters = slim_channels(filters, self.width, ratio[1], self.divisor)
        return layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                             use_bias=False, kernel_initializer=conv_init(), name=name)

    def depthwise(self, kernel_size, strides, padding, name):
        # The official normal(0, sqrt(2 / (k * k * channels))): Keras' fan_in of (k, k, C, 1).
        initializer = keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")
        return layers.DepthwiseConv2D(kernel_size, strides=strides, padding=padding,
                                      use_bias=False, depthwise_initializer=initializer,
                                      name=name)

    def batch_norm(self, name):
        return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)

    def dense(self, units, activation, name, slim_in=True):
        return layers.Dense(units, activation=activation,
                            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                            dtype="float32", name=name)


# The networks, written once for both kits.


def conv_unit(x, kit, name, filters=None, kernel_size=1, strides=1, relu=True, **slimming):
    """[ZeroPadding2D] + conv (depthwise where `filters` is None) + BN [+ ReLU6], as layers
    `{name}_pad`, `{name}_conv`, `{name}_bn`, `{name}_relu`. `slimming`: slim_in, slim_out,
    ratio of the conv."""
    padding = "same"
    if strides != 1:
        x = pad(kernel_size // 2, f"{name}_pad")(x)
        padding = "valid"
    if filters is None:
        x = kit.depthwise(kernel_size, strides, padding, f"{name}_conv")(x)
    else:
        x = kit.conv(filters, kernel_size, strides, padding, f"{name}_conv", **slimming)(x)
    x = kit.batch_norm(f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x


def _blocks(stages):
    """(block number, stage, stride, input channels at width 1.0) of every block."""
    number, channels = 0, STEM_FILTERS
    for stage in stages:
        for i in range(stage.repeats):
            number += 1
            yield number, stage, stage.strides if i == 0 else 1, channels
            channels = stage.channels


def mobilenet_v1_features(x, kit):
    """Stem and 13 depthwise-separable blocks `block1..13` (official `features.1..13`)."""
    x = conv_unit(x, kit, "stem", STEM_FILTERS, 3, strides=2, slim_in=False)
    for number, stage, strides, _ in _blocks(V1_STAGES):
        x = conv_unit(x, kit, f"block{number}_dw", kernel_size=3, strides=strides)
        x = conv_unit(x, kit, f"block{number}_pw", stage.channels)
    return x


def inverted_residual(x, kit, name, in_channels, stage, strides):
    """MobileNetV2's block: [1x1 expand + BN + ReLU6], depthwise 3x3 + BN + ReLU6, 1x1 project +
    BN, + input where the stride is 1 and the channels are unchanged."""
    t = stage.expansion
    y = x
    if t != 1:
        y = conv_unit(y, kit, f"{name}_expand", in_channels * t, ratio=(1, t))
    y = conv_unit(y, kit, f"{name}_dw", kernel_size=3, strides=strides)
    y = conv_unit(y, kit, f"{name}_project", stage.channels, relu=False, ratio=(t, 1))
    if strides == 1 and in_channels == stage.channels:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenet_v2_features(x, kit):
    """Stem, 17 inverted residuals `block1..17` (official `features.1..17`) and the 1280-wide
    1x1 conv `head` (`features.18`)."""
    x = conv_unit(x, kit, "stem", STEM_FILTERS, 3, strides=2, slim_in=False)
    for number, stage, strides, in_channels in _blocks(V2_STAGES):
        x = inverted_residual(x, kit, f"block{number}", in_channels, stage, strides)
    return conv_unit(x, kit, "head", V2_HEAD_FILTERS, slim_out=False)


FEATURES = {1: mobilenet_v1_features, 2: mobilenet_v2_features}


def build_mobilenet(version, kit, name, include_top=True, weights=None,
                    input_shape=(None, None, 3), pooling=None, classes=1000,
                    classifier_activation="softmax", include_preprocessing=True):
    """MobileNet V`version` made of `kit`'s layers (`SlimmableKit` or `PlainKit`)."""
    common.check_head_args(include_top, weights, classes)
    inputs = common.image_input(input_shape, MIN_IMAGE_SIZE, name)
    x = common.check_image_size(MIN_IMAGE_SIZE, name)(inputs)
    x = common.preprocess(x, include_preprocessing)
    x = FEATURES[version](x, kit)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        # V1's classifier reads the slimmed 1024 channels, V2's the unslimmed 1280.
        outputs = kit.dense(classes, classifier_activation, "predictions",
                            slim_in=version == 1)(x)
    else:
        outputs = common.classifier_head(x, False, pooling, classes, classifier_activation)
    model = keras.Model(inputs, outputs, name=name)
    return common.load_weights(model, weights)


def _plain_kit(width, divisor):
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not (
            math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a positive number, got {width!r}")
    return PlainKit(float(width), divisor)


def us_mobilenet_v1(width_range=(0.25, 1.0), include_top=True, weights=None,
                    input_shape=(None, None, 3), pooling=None, classes=1000,
                    classifier_activation="softmax", include_preprocessing=True,
                    divisor=DEFAULT_DIVISOR):
    """US-MobileNetV1 (MutualNet's), runnable at any width of `width_range`.

    Args:
        width_range: (min, max) widths; built at max (MutualNet: (0.25, 1.0)).
        include_top, weights (a `.keras`/`.weights.h5` file of ours or an official checkpoint /
            `.npz`), input_shape, pooling, classes, classifier_activation (None for logits),
            include_preprocessing (RGB in [0, 255] normalised inside): keras.applications'.
        divisor: channel counts are multiples of it (8, the official).
    """
    kit = SlimmableKit(width_range, divisor)
    return build_mobilenet(1, kit, "us_mobilenet_v1", include_top, weights, input_shape,
                           pooling, classes, classifier_activation, include_preprocessing)


def us_mobilenet_v2(width_range=(0.35, 1.0), include_top=True, weights=None,
                    input_shape=(None, None, 3), pooling=None, classes=1000,
                    classifier_activation="softmax", include_preprocessing=True,
                    divisor=DEFAULT_DIVISOR):
    """US-MobileNetV2, runnable at any width of `width_range` (the released MutualNet weights:
    (0.7, 1.0)). Arguments as `us_mobilenet_v1`."""
    kit = SlimmableKit(width_range, divisor)
    return build_mobilenet(2, kit, "us_mobilenet_v2", include_top, weights, input_shape,
                           pooling, classes, classifier_activation, include_preprocessing)


def mobilenet_v1(width=1.0, include_top=True, weights=None, input_shape=(None, None, 3),
                 pooling=None, classes=1000, classifier_activation="softmax",
                 include_preprocessing=True, divisor=DEFAULT_DIVISOR):
    """MobileNetV1 of ordinary Keras layers at one `width` (channels `slim_channels(c,
    width)`): `us_mobilenet_v1`'s sub-network at that width, trained on its own. Other
    arguments as `us_mobilenet_v1`."""
    return build_mobilenet(1, _plain_kit(width, divisor), "mobilenet_v1", include_top, weights,
                           input_shape, pooling, classes, classifier_activation,
                           include_preprocessing)


def mobilenet_v2(width=1.0, include_top=True, weights=None, input_shape=(None, None, 3),
                 pooling=None, classes=1000, classifier_activation="softmax",
                 include_preprocessing=True, divisor=DEFAULT_DIVISOR):
    """MobileNetV2 of ordinary Keras layers at one `width`: `us_mobilenet_v2`'s sub-network at
    that width (1280 tail channels at every width), trained on its own. Other arguments as
    `us_mobilenet_v1`."""
    return build_mobilenet(2, _plain_kit(width, divisor), "mobilenet_v2", include_top, weights,
                           input_shape, pooling, classes, classifier_activation,
                           include_preprocessing)


MODELS = (us_mobilenet_v1, us_mobilenet_v2, mobilenet_v1, mobilenet_v2)
