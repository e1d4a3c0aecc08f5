"""Keras layers of bl_keras: residual blocks, the Big-Little module and the multi-resolution
convolution, the slimmable layers."""

from bl_keras.layers.big_little import MERGE_MODES, BigLittleModule
from bl_keras.layers.blocks import ResidualBlock, SqueezeExcite, bottleneck_width
from bl_keras.layers.merge import UpsampleAdd
from bl_keras.layers.multires import DepthMix, MultiResConv
from bl_keras.layers.resample import UPSAMPLE_MODES, resize_nearest, upsample_add
from bl_keras.layers.shuffle import ChannelShuffle
from bl_keras.layers.slimmable import (
    SlimmableBatchNormalization,
    SlimmableConv2D,
    SlimmableDense,
    SlimmableDepthwiseConv2D,
    make_divisible,
    slim_channels,
)

__all__ = [
    "MERGE_MODES",
    "UPSAMPLE_MODES",
    "BigLittleModule",
    "ChannelShuffle",
    "DepthMix",
    "MultiResConv",
    "ResidualBlock",
    "SlimmableBatchNormalization",
    "SlimmableConv2D",
    "SlimmableDense",
    "SlimmableDepthwiseConv2D",
    "SqueezeExcite",
    "UpsampleAdd",
    "bottleneck_width",
    "make_divisible",
    "resize_nearest",
    "slim_channels",
    "upsample_add",
]
