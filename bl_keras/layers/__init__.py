"""Keras layers of bl_keras: residual blocks, the Big-Little module and the multi-resolution
convolution."""

from bl_keras.layers.big_little import MERGE_MODES, BigLittleModule
from bl_keras.layers.blocks import ResidualBlock, SqueezeExcite, bottleneck_width
from bl_keras.layers.merge import UpsampleAdd
from bl_keras.layers.multires import DepthMix, MultiResConv
from bl_keras.layers.resample import UPSAMPLE_MODES, resize_nearest, upsample_add
from bl_keras.layers.shuffle import ChannelShuffle

__all__ = [
    "MERGE_MODES",
    "UPSAMPLE_MODES",
    "BigLittleModule",
    "ChannelShuffle",
    "DepthMix",
    "MultiResConv",
    "ResidualBlock",
    "SqueezeExcite",
    "UpsampleAdd",
    "bottleneck_width",
    "resize_nearest",
    "upsample_add",
]
