"""Speech acoustic models of Big-Little Net (paper section 4.2, Table 3, Appendix B, Table 12).

Inputs are NHWC log-mel features `(batch, 64 mel bins, T frames, 3)` (static, delta,
delta-delta): frequency is the height axis, time the width axis. No official code exists; the
text of Appendix B and Table 12 is the specification. Readings taken where the paper is silent or
ambiguous:

* Convolutions pad "same" (symmetric, PyTorch style) in frequency and do NOT pad in time, so a
  k-wide convolution shortens time by k - 1. Strides are (2, 1): frequency only.
* Residual blocks are 1 or 2 3x3 conv-BN(-ReLU) layers. The shortcut is centre-cropped in time to
  the residual branch's output (Saon et al., 2017); when the block strides or changes width the
  shortcut is a 1x1 conv (stride 2 in frequency if the block strides) + BN, ResNet option B.
  The last BN of every residual branch starts with gamma = 0, as elsewhere in this package.
* ResNet-22: 5x5 stride-2 conv 64 (64 -> 32 bins, T 49 -> 45), stages (3x3,64)x3,
  (3x3,128,s2)x3, (3x3,256,s2)x3, (3x3,512,s2)x2 of two-conv blocks (T 45 -> 1), a 4x1 conv 512
  (4 bins -> 1; conv + BN + ReLU) and the 1x1 conv (with bias) to `classes`.
* bL-ResNet-22 (Table 12): a Big-Little module per stage, separated by transition layers (a
  residual block with one 3x3 stride-2 conv that keeps the previous stage's width, as printed in
  Table 12: (3x3,64,s2), (3x3,128,s2), (3x3,256,s2)). Big branch: the stage's blocks
  [2, 2, 1] convs (stages 1-3, one conv moved into the transition) or [2, 2] (stage 4), its first
  conv stride 2 in frequency, then bilinear upsampling x2 in frequency only (PyTorch
  `align_corners=False`). Little branch at full frequency resolution: width `width // alpha`,
  `ceil(L / beta)` convolutions for a big branch of L convolutions, grouped as two-conv blocks
  plus one one-conv block if odd (beta=2: 2+1, beta=3: 2, last stage 2), which is Appendix B's
  reading of beta.
  Merge "add": the little branch ends with a 1x1 conv + BN to the stage width, is centre-cropped
  in time to the big branch (which has more convolutions, so fewer frames), and is added to the
  upsampled big branch, whose last block has no final ReLU (as the official image bL-Net); ReLU
  after the sum. Merge "concat": upsampled big branch (with ReLU) and cropped little branch
  (little width, no 1x1 match) are concatenated (64 + 16 = 80 channels in stage 1, as Appendix B
  says) and fused by a 1x1 conv + BN + ReLU to the stage width.
* The last stage is a plain ResNet-22 stage (two 512 blocks at 4 bins, no branching) when
  `branch_last_stage=False`; the default `None` follows Table 12: branched except for
  (alpha=2, beta=3).
* Outputs. `pooling=None`: per-frame outputs `(batch, T - 48, classes)` (the singleton frequency
  axis is dropped); a 64x49 input gives exactly one frame, and a longer input of T frames gives
  the outputs of every 49-frame window (a 48-frame receptive field, no padding in time).
  `pooling="avg"`: the per-frame logits averaged over time, then `classifier_activation`:
  `(batch, classes)`, one prediction per utterance of any length >= 49 frames.
* `width_multiplier` scales every width (stem, stages, 4x1 projection) for small test models;
  1 is the paper's network.

Complexity (`tests/test_speech_models.py` prints the table). Our MACs of ResNet-22 with the 32k
output layer are 1.10e9 (paper "FLOPs" 1.11e9), so the paper's FLOPs are MACs and include the 32k
output layer (16.4e6 MACs); the bL ratios agree with Table 3 to within a few percent. The
paper's parameter counts (3.0-3.3e6) cannot be reproduced: the 3x3 convolutions of the 512-wide
stage alone hold 8.3e6 weights and the 32k output layer 16.4e6; we report ours.
"""

import math

import keras
import numpy as np
from keras import layers, ops

from bl_keras.layers.blocks import batch_norm, check_positive_int, conv_init

MEL_BINS = 64
MIN_FRAMES = 49
CONTEXT = MIN_FRAMES - 1
STAGE_WIDTHS = (64, 128, 256, 512)
BASELINE_BLOCKS = (3, 3, 3, 2)
MERGES = ("add", "concat")


@keras.saving.register_keras_serializable(package="bl_keras")
class MinFrames(layers.Layer):
    """Identity that raises a ValueError when the time axis (axis 2) is shorter than `frames`."""

    def __init__(self, frames, **kwargs):
        super().__init__(**kwargs)
        self.frames = frames

    def call(self, x):
        t = x.shape[2]
        if t is not None and t < self.frames:
            raise ValueError(
                f"speech models need at least {self.frames} frames (time axis 2), got {t} "
                f"(input shape {tuple(x.shape)})"
            )
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "frames": self.frames}


def _bilinear_matrix(in_size, out_size):
    """(out, in) matrix of PyTorch's bilinear resize with `align_corners=False`."""
    m = np.zeros((out_size, in_size), "float32")
    scale = in_size / out_size
    for o in range(out_size):
        src = max((o + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(math.floor(src)), in_size - 1)
        i1 = min(i0 + 1, in_size - 1)
        w = src - i0
        m[o, i0] += 1.0 - w
        m[o, i1] += w
    return m


@keras.saving.register_keras_serializable(package="bl_keras")
class FrequencyUpsample(layers.Layer):
    """Bilinear upsampling by `factor` along the frequency axis (axis 1) only.

    Exactly PyTorch's `interpolate(mode="bilinear", align_corners=False)` with a time scale of 1,
    written as a fixed (out, in) matrix so any batch size and number of frames work.
    """

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("factor", factor)
        self.factor = factor

    def build(self, input_shape):
        if input_shape[1] is None:
            raise ValueError("FrequencyUpsample needs a static frequency size")
        self.matrix = _bilinear_matrix(input_shape[1], input_shape[1] * self.factor)

    def call(self, x):
        m = ops.convert_to_tensor(self.matrix, dtype=x.dtype)
        return ops.einsum("of,bftc->botc", m, x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] * self.factor, *input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def _conv(x, filters, kernel_size, name, strides=1, use_bias=False):
    """Conv padded symmetrically in frequency only, valid in time, stride in frequency only."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    if kh > 1 and kh % 2 == 1:
        x = layers.ZeroPadding2D(((kh // 2, kh // 2), (0, 0)), name=f"{name}_pad")(x)
    return layers.Conv2D(
        filters,
        (kh, kw),
        strides=(strides, 1),
        padding="valid",
        use_bias=use_bias,
        kernel_initializer=conv_init(),
        name=name,
    )(x)


def _conv_bn(x, filters, kernel_size, name, strides=1, relu=True, zero_gamma=False):
    x = _conv(x, filters, kernel_size, f"{name}_conv", strides=strides)
    x = batch_norm(f"{name}_bn", zero_gamma=zero_gamma)(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _crop_time(x, frames, name):
    """Centre crop of `frames` frames in total (an even number) from the time axis."""
    if frames == 0:
        return x
    if frames % 2:
        raise ValueError(f"cannot centre-crop an odd number of frames ({frames})")
    return layers.Cropping2D(((0, 0), (frames // 2, frames // 2)), name=name)(x)


def _residual_block(x, filters, convs, name, strides=1, last_relu=True):
    """`convs` 3x3 conv-BN layers (ReLU between), the first with `strides` in frequency; the
    shortcut is cropped in time by `2 * convs` frames and projected if the shape changes."""
    y = x
    for i in range(convs):
        y = _conv_bn(
            y, filters, 3, f"{name}_{i + 1}", strides=strides if i == 0 else 1,
            relu=i < convs - 1, zero_gamma=i == convs - 1,
        )
    shortcut = _crop_time(x, 2 * convs, f"{name}_crop")
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters, 1, strides=(strides, 1), use_bias=False, kernel_initializer=conv_init(),
            name=f"{name}_downsample_conv",
        )(shortcut)
        shortcut = batch_norm(f"{name}_downsample_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y) if last_relu else y


def _blocks(x, filters, conv_counts, name, strides=1, last_relu=True):
    for i, convs in enumerate(conv_counts):
        x = _residual_block(
            x, filters, convs, f"{name}_block{i + 1}", strides=strides if i == 0 else 1,
            last_relu=last_relu or i < len(conv_counts) - 1,
        )
    return x


def little_conv_counts(big_convs, beta):
    """Little-branch blocks for a big branch of `big_convs` convolutions: ceil(L / beta)
    convolutions as two-conv blocks plus a one-conv block if odd (Appendix B)."""
    n = -(-big_convs // beta)
    return (2,) * (n // 2) + ((1,) if n % 2 else ())


def _big_little_module(x, filters, big_counts, alpha, beta, merge, name):
    big = _blocks(x, filters, big_counts, f"{name}_big", strides=2, last_relu=merge == "concat")
    big = FrequencyUpsample(2, name=f"{name}_big_upsample")(big)
    little_counts = little_conv_counts(sum(big_counts), beta)
    little = _blocks(x, filters // alpha, little_counts, f"{name}_little")
    crop = 2 * (sum(big_counts) - sum(little_counts))
    if merge == "add":
        little = _conv_bn(little, filters, 1, f"{name}_little_match", relu=False)
        little = _crop_time(little, crop, f"{name}_little_crop")
        y = layers.Add(name=f"{name}_merge")([big, little])
        return layers.ReLU(name=f"{name}_out")(y)
    little = _crop_time(little, crop, f"{name}_little_crop")
    y = layers.Concatenate(name=f"{name}_merge")([big, little])
    return _conv_bn(y, filters, 1, f"{name}_fuse")


def _scaled(width, width_multiplier):
    return max(1, int(round(width * width_multiplier)))


def _check_args(input_shape, classes, pooling, width_multiplier, name):
    check_positive_int("classes", classes)
    if pooling not in (None, "avg"):
        raise ValueError(f"pooling must be None or 'avg', got {pooling!r}")
    if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float)) or (
        width_multiplier <= 0
    ):
        raise ValueError(f"width_multiplier must be a positive number, got {width_multiplier!r}")
    if len(input_shape) != 3 or input_shape[0] != MEL_BINS:
        raise ValueError(
            f"{name} takes input_shape=({MEL_BINS}, frames, channels) (64 mel bins as height), "
            f"got {tuple(input_shape)!r}"
        )
    frames = input_shape[1]
    if frames is not None and frames < MIN_FRAMES:
        raise ValueError(
            f"{name} needs at least {MIN_FRAMES} frames, got input_shape={tuple(input_shape)!r}"
        )


def _head(x, width, classes, pooling, classifier_activation):
    x = _conv_bn(x, width, (4, 1), "projection")
    x = layers.Conv2D(classes, 1, use_bias=True, dtype="float32", name="output_conv")(x)
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    else:
        x = layers.Reshape((-1, classes), name="frames")(x)
    return layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)


def _stem(inputs, width):
    x = MinFrames(MIN_FRAMES, name="min_frames")(inputs)
    return _conv_bn(x, width, 5, "stem", strides=2)


def resnet22_speech(
    classes=32000,
    pooling=None,
    classifier_activation="softmax",
    input_shape=(MEL_BINS, None, 3),
    width_multiplier=1,
):
    """ResNet-22 acoustic model (Appendix B): `(batch, 64, T, 3)` -> `(batch, T - 48, classes)`
    per-frame outputs, or `(batch, classes)` with `pooling="avg"`. See the module docstring."""
    _check_args(input_shape, classes, pooling, width_multiplier, "resnet22_speech")
    widths = [_scaled(w, width_multiplier) for w in STAGE_WIDTHS]
    inputs = keras.Input(shape=input_shape, name="features")
    x = _stem(inputs, widths[0])
    for stage, (width, blocks) in enumerate(zip(widths, BASELINE_BLOCKS)):
        x = _blocks(x, width, (2,) * blocks, f"stage{stage + 1}", strides=1 if stage == 0 else 2)
    outputs = _head(x, widths[-1], classes, pooling, classifier_activation)
    return keras.Model(inputs, outputs, name="resnet22_speech")


def bl_resnet22_speech(
    alpha=4,
    beta=1,
    merge="add",
    classes=32000,
    pooling=None,
    classifier_activation="softmax",
    input_shape=(MEL_BINS, None, 3),
    width_multiplier=1,
    branch_last_stage=None,
):
    """bL-ResNet-22 acoustic model (Table 12, Table 3 lines 2-6); same inputs and outputs as
    `resnet22_speech`. `branch_last_stage=None` branches the last stage unless
    (alpha, beta) == (2, 3), as the paper. See the module docstring."""
    check_positive_int("alpha", alpha)
    check_positive_int("beta", beta)
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    _check_args(input_shape, classes, pooling, width_multiplier, "bl_resnet22_speech")
    widths = [_scaled(w, width_multiplier) for w in STAGE_WIDTHS]
    if widths[0] // alpha < 1:
        raise ValueError(
            f"alpha={alpha} leaves no channels in the little branch of the {widths[0]}-wide "
            "first stage"
        )
    if branch_last_stage is None:
        branch_last_stage = (alpha, beta) != (2, 3)
    inputs = keras.Input(shape=input_shape, name="features")
    x = _stem(inputs, widths[0])
    for stage, width in enumerate(widths):
        name = f"stage{stage + 1}"
        if stage > 0:
            x = _residual_block(x, widths[stage - 1], 1, f"transition{stage}", strides=2)
        if stage == 3 and not branch_last_stage:
            x = _blocks(x, width, (2, 2), name)
        else:
            big_counts = (2, 2, 1) if stage < 3 else (2, 2)
            x = _big_little_module(x, width, big_counts, alpha, beta, merge, name)
    outputs = _head(x, widths[-1], classes, pooling, classifier_activation)
    suffix = "_cat" if merge == "concat" else ""
    return keras.Model(inputs, outputs, name=f"bl_resnet22_speech_a{alpha}_b{beta}{suffix}")


__all__ = [
    "FrequencyUpsample",
    "MinFrames",
    "bl_resnet22_speech",
    "little_conv_counts",
    "resnet22_speech",
]
