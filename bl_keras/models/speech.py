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
  Merge "add" is `_pyramid_module` with two branches.
* bL-PYR-ResNet-22 (alpha=4, beta=1), Table 3 line 7. The text (end of Appendix B.2) only says:
  four branches in stage 1, three in stage 2, two in stage 3 (identical to bL-ResNet-22
  (alpha=4, beta=1)), stage 4 as ResNet-22; the stage-1 big branch widened to 256 channels,
  the three little branches 64, 16 and 4 wide; "the middle branches require both resolution
  upsampling and 1x1 convolution to match channels". Our reading (`_pyramid_module`):
  branch j = 0..K-1 runs at 1/2^j of the stage input's frequency resolution (stage 1: 32, 16,
  8, 4 bins; stage 2: 16, 8, 4), is `alpha^(K-1-j)` times narrower than the big branch (stage
  1: 4, 16, 64, 256; stage 2: 8, 32, 128), and has the big branch's blocks (2, 2, 1) (with
  beta > 1, `little_conv_counts(5, beta^(K-1-j))`, cropped in time to the deepest), its first
  conv and shortcut strided 2^j at once, as the bL big branch takes its stride 2. Branches are
  merged by addition at the big branch's width (256 in stage 1, 128 in stage 2): each other
  branch ends with ReLU and a 1x1 conv + BN to that width (done before the upsampling, which is
  cheaper and equal: BN is affine and the bilinear weights of every output bin sum to 1), then
  branches j > 0 are upsampled bilinearly x2^j in frequency; sum, ReLU. Merging at 256 is the
  only reading in which the middle branches literally need both: the big branch needs only the
  upsampling, the full-resolution 4-channel branch only the 1x1. Transition 1 is Table 12's
  (3x3, 64, s2) (from 256 channels, so with a projection shortcut), transition 2 (3x3, 128, s2),
  transition 3 (3x3, 256, s2). This gives 1.029e9 MACs with the 32k output layer at 64x49
  (ResNet-22 / ours = 1.07x) against the paper's 0.98e9 (1.13x). Alternatives, not built:
  merging stage 1 at 64, the stage width (a 1x1 256 -> 64 on the big branch, none on the
  64-wide middle branch, a 64-wide transition 1 input) gives 0.959e9 (1.15x); striding branch
  j by j successive stride-2 convolutions gives 1.24e9 (0.89x) and by j stride-2 blocks (as the
  image `BigLittleModule` for K > 2) 1.67e9 (0.66x), both contradicting Table 3's saving.
  `width_multiplier` must keep the 4-channel branch: >= 0.25 for alpha=4.
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

Complexity (`python -m apps.benchmark --nospeed` and `tests/test_speech_models.py` print the
table). Our MACs of ResNet-22 with the 32k output layer are 1.105e9 (paper "FLOPs" 1.11e9), so the
paper's FLOPs are MACs and include the 32k output layer (16.4e6 MACs); the bL ratios of lines 2-6
agree with Table 3 to within a few percent, bL-PYR's (line 7) is 5% below it (see above). The
paper's parameter counts (3.0-3.3e6) cannot be reproduced: the 3x3 convolutions of the 512-wide
stage alone hold 8.3e6 weights and the 32k output layer 16.4e6; we report ours.
"""

import math

import keras
import numpy as np
from keras import layers, ops

from bl_keras.layers.big_little import MERGE_MODES
from bl_keras.layers.blocks import batch_norm, check_positive_int, conv_init
from bl_keras.models.common import check_alpha_beta

MEL_BINS = 64
MIN_FRAMES = 49
STAGE_WIDTHS = (64, 128, 256, 512)
BASELINE_BLOCKS = (3, 3, 3, 2)


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
        # [B, F, T, C] . [O, F] over F -> [B, T, C, O] -> [B, O, T, C]: a reshape and one
        # matmul (an einsum here converts to TFLite tensors of invalid size).
        m = ops.convert_to_tensor(self.matrix, dtype=x.dtype)
        return ops.transpose(ops.tensordot(x, m, axes=[[1], [1]]), (0, 3, 1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] * self.factor, *input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def _conv(x, filters, kernel_size, name, strides=1):
    """Conv padded symmetrically in frequency only, valid in time, stride in frequency only."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    if kh > 1 and kh % 2 == 1:
        x = layers.ZeroPadding2D(((kh // 2, kh // 2), (0, 0)), name=f"{name}_pad")(x)
    if (kh, kw) == (1, 1) and strides != 1:
        # A strided 1x1 conv is subsampling then a 1x1 conv (the same numbers and MACs). On
        # CPUs with AVX512-BF16, oneDNN's backward pass of a 1x1 conv with strides (2, 1) and
        # fewer than 16 channels corrupts the heap (TF 2.21: "free(): invalid next size",
        # reproduced with a lone Conv2D), so the stride is a 1x1 pooling step instead.
        x = layers.MaxPooling2D(1, strides=(strides, 1), name=f"{name}_subsample")(x)
        strides = 1
    return layers.Conv2D(
        filters,
        (kh, kw),
        strides=(strides, 1),
        padding="valid",
        use_bias=False,
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
        shortcut = _conv_bn(shortcut, filters, 1, f"{name}_downsample", strides=strides,
                            relu=False)
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


def _branch_name(j, branches):
    if j == branches - 1:
        return "big"
    return "little" if j == 0 else f"middle{j}"


def _pyramid_module(x, widths, big_counts, beta, name):
    """Branches j = 0..K-1 of `widths[j]` channels at frequency resolution 1 / 2^j, merged by
    addition at the width of the big (last, lowest-resolution) branch; K = 2 is the Big-Little
    module with merge="add".

    Branch j has the big branch's blocks `big_counts` if it is the big one, else
    `little_conv_counts(sum(big_counts), beta ** (K - 1 - j))`; its first conv and the first
    shortcut projection stride 2^j in frequency. Every branch but the big one ends with ReLU and a
    1x1 conv + BN to the big branch's width; branches j > 0 are then upsampled bilinearly x2^j in
    frequency (after the 1x1: cheaper, and equal since bilinear weights sum to 1); the shallower
    branches are centre-cropped in time to the deepest. Sum, ReLU."""
    branches = len(widths)
    counts = [
        tuple(big_counts) if j == branches - 1
        else little_conv_counts(sum(big_counts), beta ** (branches - 1 - j))
        for j in range(branches)
    ]
    deepest = max(sum(c) for c in counts)
    outputs = []
    for j in reversed(range(branches)):  # big branch first: the bL models' layer order
        branch = f"{name}_{_branch_name(j, branches)}"
        is_big = j == branches - 1
        y = _blocks(x, widths[j], counts[j], branch, strides=2**j, last_relu=not is_big)
        if not is_big:
            y = _conv_bn(y, widths[-1], 1, f"{branch}_match", relu=False)
        if j > 0:
            y = FrequencyUpsample(2**j, name=f"{branch}_upsample")(y)
        outputs.append(_crop_time(y, 2 * (deepest - sum(counts[j])), f"{branch}_crop"))
    y = layers.Add(name=f"{name}_merge")(outputs)
    return layers.ReLU(name=f"{name}_out")(y)


def _big_little_module(x, filters, big_counts, alpha, beta, merge, name):
    if merge == "add":
        return _pyramid_module(x, (filters // alpha, filters), big_counts, beta, name)
    big = _blocks(x, filters, big_counts, f"{name}_big", strides=2)
    big = FrequencyUpsample(2, name=f"{name}_big_upsample")(big)
    little_counts = little_conv_counts(sum(big_counts), beta)
    little = _blocks(x, filters // alpha, little_counts, f"{name}_little")
    crop = 2 * (sum(big_counts) - sum(little_counts))
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
    check_alpha_beta(alpha, beta)
    if merge not in MERGE_MODES:
        raise ValueError(f"merge must be one of {MERGE_MODES}, got {merge!r}")
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


PYRAMID_BIG_WIDTH = 256  # stage 1 big branch of bL-PYR-ResNet-22, widened from 64 (Appendix B.2)


def pyramid_branch_widths(alpha, width_multiplier=1):
    """Branch widths (full resolution first) of the pyramid stages 1 and 2 of
    bL-PYR-ResNet-22: big branches of 256 and 128 (scaled), branch j `alpha^(K-1-j)` times
    narrower than the big one. Raises a ValueError if a branch would have no channel."""
    stages = []
    for stage, (big, branches) in enumerate(((PYRAMID_BIG_WIDTH, 4), (STAGE_WIDTHS[1], 3))):
        scaled = _scaled(big, width_multiplier)
        widths = tuple(scaled // alpha ** (branches - 1 - j) for j in range(branches))
        if widths[0] < 1:
            raise ValueError(
                f"alpha={alpha} leaves no channels in the full-resolution branch of stage "
                f"{stage + 1} of bl_pyr_resnet22_speech ({scaled} // {alpha}**{branches - 1} "
                f"at width_multiplier={width_multiplier!r}); use width_multiplier >= "
                f"{alpha ** (branches - 1) / big:g}"
            )
        stages.append(widths)
    return tuple(stages)


def bl_pyr_resnet22_speech(
    alpha=4,
    beta=1,
    classes=32000,
    pooling=None,
    classifier_activation="softmax",
    input_shape=(MEL_BINS, None, 3),
    width_multiplier=1,
):
    """bL-PYR-ResNet-22 acoustic model (Table 3 line 7, end of Appendix B.2): pyramid modules of
    4 and 3 branches in stages 1-2, a Big-Little module in stage 3, a plain stage 4; same inputs
    and outputs as `resnet22_speech`. See the module docstring for the reading."""
    check_alpha_beta(alpha, beta)
    _check_args(input_shape, classes, pooling, width_multiplier, "bl_pyr_resnet22_speech")
    widths = [_scaled(w, width_multiplier) for w in STAGE_WIDTHS]
    pyramids = pyramid_branch_widths(alpha, width_multiplier)
    inputs = keras.Input(shape=input_shape, name="features")
    x = _stem(inputs, widths[0])
    x = _pyramid_module(x, pyramids[0], (2, 2, 1), beta, "stage1")
    x = _residual_block(x, widths[0], 1, "transition1", strides=2)
    x = _pyramid_module(x, pyramids[1], (2, 2, 1), beta, "stage2")
    x = _residual_block(x, widths[1], 1, "transition2", strides=2)
    x = _big_little_module(x, widths[2], (2, 2, 1), alpha, beta, "add", "stage3")
    x = _residual_block(x, widths[2], 1, "transition3", strides=2)
    x = _blocks(x, widths[3], (2, 2), "stage4")
    outputs = _head(x, widths[-1], classes, pooling, classifier_activation)
    return keras.Model(inputs, outputs, name=f"bl_pyr_resnet22_speech_a{alpha}_b{beta}")


__all__ = [
    "FrequencyUpsample",
    "MinFrames",
    "bl_pyr_resnet22_speech",
    "bl_resnet22_speech",
    "little_conv_counts",
    "pyramid_branch_widths",
    "resnet22_speech",
]
