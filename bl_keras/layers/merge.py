"""Big-Little merges as layers, for functional models whose sizes are only known at run time."""

import keras
from keras import layers

from bl_keras.layers.resample import UPSAMPLE_MODES, upsample_add


@keras.saving.register_keras_serializable(package="bl_keras")
class UpsampleAdd(layers.Layer):
    """The Big-Little merge by addition: `large + upsample(small, size_of(large))`.

    `bl_keras.layers.resample.upsample_add` as a layer, so functional models of any input size
    can use it (the target size is only known when the graph runs).

    Args:
        upsample: "nearest" (PyTorch's index rule, as the official code) or "bilinear".
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> UpsampleAdd()([keras.ops.ones((1, 4, 4, 8)), keras.ops.ones((1, 7, 7, 8))]).shape
        (1, 7, 7, 8)
    """

    def __init__(self, upsample="nearest", **kwargs):
        super().__init__(**kwargs)
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.upsample = upsample

    def call(self, inputs):
        small, large = inputs
        return upsample_add(small, large, self.upsample)

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {**super().get_config(), "upsample": self.upsample}
