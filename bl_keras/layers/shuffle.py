"""Channel shuffle (ShuffleNet)."""

import keras
from keras import layers, ops

from bl_keras.layers.blocks import check_positive_int


@keras.saving.register_keras_serializable(package="bl_keras")
class ChannelShuffle(layers.Layer):
    """ShuffleNet's channel shuffle (Zhang et al., 2018; Ma et al., 2018, Fig. 3).

    Channels split into `groups` groups are interleaved: NHWC (..., g, C/g) is transposed to
    (..., C/g, g), as torchvision's `channel_shuffle`. Only reshape and transpose (TFLite builtin
    ops); the spatial size may be dynamic, which a `keras.layers.Reshape` cannot express.

    Args:
        groups: number of channel groups (2 in ShuffleNetV2).
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> x = keras.ops.reshape(keras.ops.arange(4.0), (1, 1, 1, 4))
        >>> ChannelShuffle(2)(x)[0, 0, 0]  # channels 0, 2, 1, 3
    """

    def __init__(self, groups=2, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("groups", groups)
        self.groups = groups

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(
                f"ChannelShuffle needs a known channel count divisible by groups={self.groups}, "
                f"got {channels!r}"
            )

    def call(self, x):
        channels = x.shape[-1]
        shape = ops.shape(x)
        x = ops.reshape(x, (-1, shape[1], shape[2], self.groups, channels // self.groups))
        x = ops.transpose(x, (0, 1, 2, 4, 3))
        return ops.reshape(x, (-1, shape[1], shape[2], channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}
