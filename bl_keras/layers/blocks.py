"""Residual blocks shared by the ResNet-family baselines and the Big-Little modules.

Every detail follows the official Big-Little Net code (IBM/BigLittleNet `models/bl*.py`):
convolutions have no bias; the stride sits on the 3x3 convolution; a strided shortcut is
AvgPool(3, stride 2, padding 1, padding counted in the average) followed by a 1x1 conv + BN when
the channel count changes; BatchNorm uses epsilon 1e-5 and momentum 0.9 (PyTorch's 0.1); the
last BN of each block starts with gamma = 0. Padding is explicit and symmetric, as PyTorch's,
because Keras' "same" pads strided convolutions asymmetrically.
"""

import keras
from keras import layers, ops

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
BLOCK_TYPES = ("bottleneck", "basic")

def conv_init():
    """PyTorch's kaiming_normal_(mode="fan_out", nonlinearity="relu"), as the official code uses.

    A new initializer per layer: one shared unseeded Keras initializer returns the same values
    on every call, so every kernel of a shape would start identical."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def batch_norm(name, zero_gamma=False, dtype=None):
    return layers.BatchNormalization(
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=name,
        dtype=dtype,
    )


def conv(filters, kernel_size, name, strides=1, groups=1, dtype=None):
    """Conv without bias. Stride-1 convs pad "same" (symmetric for odd kernels); strided ones
    must be preceded by `pad(kernel_size // 2)` and use "valid", as PyTorch pads both sides.

    `dtype` (here and in `batch_norm`, `pad`): the dtype policy; composite layers pass their own
    `self.dtype_policy` so a per-layer policy such as "mixed_float16" reaches their sublayers."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same" if strides == 1 else "valid",
        groups=groups,
        use_bias=False,
        kernel_initializer=conv_init(),
        name=name,
        dtype=dtype,
    )


def pad(amount, name, dtype=None):
    return layers.ZeroPadding2D(amount, name=name, dtype=dtype)


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@keras.saving.register_keras_serializable(package="bl_keras")
class SqueezeExcite(layers.Layer):
    """Squeeze-and-excitation (Hu et al., 2018) as in the official bL-SEResNeXt.

    Global average pool, FC (with bias) to `channels // ratio`, ReLU, FC back to `channels`,
    sigmoid, channel-wise rescale. The official code uses 1x1 convs on the pooled map; dense
    layers on the pooled vector are the same computation.

    Args:
        ratio: channel reduction ratio (16 in the paper).
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> y = SqueezeExcite(16)(keras.ops.ones((2, 8, 8, 64)))
    """

    def __init__(self, ratio=16, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("ratio", ratio)
        self.ratio = ratio

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels // self.ratio < 1:
            raise ValueError(
                f"SqueezeExcite ratio {self.ratio} leaves no channels of {channels}"
            )
        policy = self.dtype_policy
        self.fc1 = layers.Dense(
            channels // self.ratio, activation="relu", name="fc1", dtype=policy
        )
        self.fc2 = layers.Dense(channels, activation="sigmoid", name="fc2", dtype=policy)
        self.fc1.build((input_shape[0], channels))
        self.fc2.build((input_shape[0], channels // self.ratio))

    def call(self, x):
        scale = self.fc2(self.fc1(ops.mean(x, axis=(1, 2))))
        return x * ops.cast(scale, x.dtype)[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio}


def bottleneck_width(filters, groups=1, base_width=64):
    """Inner width of a (ResNeXt) bottleneck with `filters` outputs, as the official code:
    `floor(filters * base_width / 64) // 4 * groups` (plain ResNet: `filters // 4`)."""
    return (filters * base_width // 64) // 4 * groups


@keras.saving.register_keras_serializable(package="bl_keras")
class ResidualBlock(layers.Layer):
    """A ResNet residual block: bottleneck (He et al., 2016; ResNeXt with `groups`; SE) or basic.

    Bottleneck: 1x1 (width) - 3x3 (width, `groups`, stride) - 1x1 (filters) [- SE], each conv
    followed by BN, ReLU after the first two; basic: 3x3 (stride) - 3x3. The shortcut is the
    identity when shape is unchanged, otherwise AvgPool(3, 2, pad 1) if strided and a 1x1 conv +
    BN if the channel count changes (the official Big-Little Net shortcut). Sublayers are named as
    the official PyTorch modules (`conv1`, `bn1`, ..., `downsample_conv`, `downsample_bn`).

    Args:
        filters: output channels.
        block_type: "bottleneck" or "basic".
        strides: 1 or 2, applied by the 3x3 convolution (the first one in a basic block).
        width: inner width of a bottleneck; defaults to `filters // 4` (basic blocks have none).
        groups: groups of the 3x3 convolution (ResNeXt cardinality).
        se_ratio: squeeze-excitation reduction ratio after the last BN; 0 disables it.
        last_relu: whether to apply ReLU after the residual addition. Big-Little's big branch
            ends with a block without it, so the merge adds pre-activation features.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> block = ResidualBlock(256, strides=2, width=64)
        >>> block(keras.ops.ones((1, 56, 56, 64))).shape
        (1, 28, 28, 256)
    """

    def __init__(
        self,
        filters,
        block_type="bottleneck",
        strides=1,
        width=None,
        groups=1,
        se_ratio=0,
        last_relu=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("filters", filters)
        if block_type not in BLOCK_TYPES:
            raise ValueError(f"block_type must be one of {BLOCK_TYPES}, got {block_type!r}")
        if strides not in (1, 2):
            raise ValueError(f"strides must be 1 or 2, got {strides!r}")
        if block_type == "basic" and (width is not None or groups != 1):
            raise ValueError(
                f"a basic block has no bottleneck width or groups, got width={width!r}, "
                f"groups={groups!r}"
            )
        self.filters = filters
        self.block_type = block_type
        self.strides = strides
        self.width = width if width is not None else filters // 4
        if block_type == "bottleneck":
            check_positive_int("width", self.width)
            check_positive_int("groups", groups)
            if self.width % groups:
                raise ValueError(f"width {self.width} is not divisible by groups {groups}")
        self.groups = groups
        self.se_ratio = se_ratio
        self.last_relu = last_relu

        # Every sublayer follows this block's dtype policy (a per-layer "mixed_float16" too).
        policy = self.dtype_policy
        if block_type == "bottleneck":
            self.convs = [
                conv(self.width, 1, "conv1", dtype=policy),
                conv(self.width, 3, "conv2", strides=strides, groups=groups, dtype=policy),
                conv(filters, 1, "conv3", dtype=policy),
            ]
            strided_conv = 1
        else:
            self.convs = [
                conv(filters, 3, "conv1", strides=strides, dtype=policy),
                conv(filters, 3, "conv2", dtype=policy),
            ]
            strided_conv = 0
        self.bns = [
            batch_norm(f"bn{i + 1}", zero_gamma=i == len(self.convs) - 1, dtype=policy)
            for i in range(len(self.convs))
        ]
        self.strided_conv = strided_conv
        self.conv_pad = pad(1, "conv_pad", dtype=policy) if strides == 2 else None
        self.se = SqueezeExcite(se_ratio, name="se", dtype=policy) if se_ratio else None
        self.downsample_pool = None
        if strides == 2:
            self.downsample_pool = keras.Sequential(
                [pad(1, "pad", dtype=policy), layers.AveragePooling2D(3, strides=2, dtype=policy)],
                name="downsample_pool",
            )
        self.downsample_conv = None
        self.downsample_bn = None

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError("ResidualBlock needs a known channel count")
        if in_channels != self.filters:
            self.downsample_conv = conv(self.filters, 1, "downsample_conv", dtype=self.dtype_policy)
            self.downsample_bn = batch_norm("downsample_bn", dtype=self.dtype_policy)
        shape = tuple(input_shape)
        for i, (c, bn) in enumerate(zip(self.convs, self.bns)):
            if i == self.strided_conv and self.conv_pad is not None:
                shape = self.conv_pad.compute_output_shape(shape)
            c.build(shape)
            shape = c.compute_output_shape(shape)
            bn.build(shape)
        if self.se is not None:
            self.se.build(shape)
        short = tuple(input_shape)
        if self.downsample_pool is not None:
            self.downsample_pool.build(short)
            short = self.downsample_pool.compute_output_shape(short)
        if self.downsample_conv is not None:
            self.downsample_conv.build(short)
            self.downsample_bn.build(self.downsample_conv.compute_output_shape(short))

    def call(self, x, training=None):
        y = x
        last = len(self.convs) - 1
        for i, (c, bn) in enumerate(zip(self.convs, self.bns)):
            if i == self.strided_conv and self.conv_pad is not None:
                y = self.conv_pad(y)
            y = bn(c(y), training=training)
            if i != last:
                y = ops.relu(y)
        if self.se is not None:
            y = self.se(y)
        shortcut = x
        if self.downsample_pool is not None:
            shortcut = self.downsample_pool(shortcut)
        if self.downsample_conv is not None:
            shortcut = self.downsample_bn(self.downsample_conv(shortcut), training=training)
        y = y + ops.cast(shortcut, y.dtype)
        return ops.relu(y) if self.last_relu else y

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        if self.strides == 2:
            h = None if h is None else (h + 1) // 2
            w = None if w is None else (w + 1) // 2
        return (input_shape[0], h, w, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "block_type": self.block_type,
            "strides": self.strides,
            "width": self.width if self.block_type == "bottleneck" else None,
            "groups": self.groups,
            "se_ratio": self.se_ratio,
            "last_relu": self.last_relu,
        }
