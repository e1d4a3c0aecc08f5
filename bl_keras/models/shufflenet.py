"""ShuffleNetV2 (Ma et al., ECCV 2018) and its Big-Little version (Chen et al., ICLR 2019,
Appendix A.5, Table 9).

Baseline: torchvision's layout. 3x3/2 conv 24 + BN + ReLU, 3x3/2 max-pool (padding 1), stages 2-4
of one downsampling unit and 3, 7, 3 basic units (channel split, concat, channel shuffle with 2
groups), 1x1 conv5 + BN + ReLU, global average pool, FC. ShuffleNetV2 1x has 2,278,604
parameters and 144.9 MMACs at 224, as torchvision's `shufflenet_v2_x1_0`.

Big-Little version. The paper gives only Table 9, so the network is derived from bL-ResNet
(Appendix A.2 and the official code) as follows:

- A ShuffleNetV2 stage is a downsampling unit (the transition) and L basic units, L = 3, 7, 3
  (Ma et al.'s "repeat" of stride-1 units); L plays the role of a bL-ResNet stage's block count.
- Each stage becomes a Big-Little module. Big branch: L - 1 units at half the module's
  resolution, the first a stride-2 downsampling unit that also changes the width. Little branch:
  max(1, L // beta - 1) units at full resolution, `filters // alpha` wide (rounded down to an
  even count, as a unit splits its channels in two), the first a stride-1 downsampling unit when
  the width changes, then a 1x1 conv + BN to `filters`. Merge: the big output upsampled (nearest,
  PyTorch's index rule) and added to the little one, then ReLU.
- Fusion: as in bL-ResNet, the transition is shared by both branches and carries the next
  stage's stride: the fusion unit of the stage-2 and stage-3 modules is a stride-2 downsampling
  unit (keeping the width, like bL-ResNet's `fusion` ResBlock); the last module's fusion is a
  stride-1 basic unit, like bL-ResNet's last module.
- Stage 2's own downsampling unit has no module in front of it to carry its stride, so it stays
  a plain unit between the stem (plain conv + max-pool) and the first module: it brings the map
  to stage 2's resolution, where the little branch runs.

So the little branches run at the baseline's stage resolutions (1/8, 1/16, 1/32), the big ones
at half of them, as in bL-ResNet, and the output is at 1/32. ShuffleNet units are used unchanged
(a unit's output is a shuffled concat, with no ReLU after it to drop before the merge). Readings
tried and rejected (differences from Table 9 at 1x / 1.5x / 2x, MACs at 256):

- bL modules for stages 2-3 with the little branch at the stage's input resolution and a fusion
  unit of stride 2, last stage plain: MACs +127% / +144% / +139%; with the bL stem: +176%.
- bL-ResNet's resolutions with stage 4 plain (fusion strides 2, 1; L = 4, 8, 4 units per
  stage): MACs +13.6 / +15.4 / +15.3%, params +2.0 / -22.5 / +2.7%. Table 9's "similar FLOPs"
  needs stage 4's big branch at half resolution too.
- As chosen but with L = 4, 8, 4 (big branches 3, 7, 3 long): MACs +3.6 / +3.8 / +4.2%,
  params +9.7 / -13.9 / +13.0%.

Ours (`bl_keras.profile`) against Table 9; the baselines at 224, bL-ShuffleNetV2 at 256:

    model                  params      paper     diff    MMACs  paper    diff
    ShuffleNetV2 1x        2,278,604   2.30M    -0.93%   144.9   146   -0.75%
    ShuffleNetV2 1.5x      3,503,624   3.51M    -0.18%   295.8   299   -1.08%
    ShuffleNetV2 2x        7,393,996   7.40M    -0.08%   583.3   588   -0.81%
    bL-ShuffleNetV2 1x     2,401,042   2.33M    +3.05%   148.2   150   -1.22%
    bL-ShuffleNetV2 1.5x   3,779,812   4.80M   -21.25%   293.0   298   -1.67%
    bL-ShuffleNetV2 2x     7,918,962   7.60M    +4.20%   583.4   590   -1.11%

MACs are within 1.7% on every row; the bL parameter counts miss 3% on all three rows. Table 9
adds only 0.05M (1x) and 0.2M (2x) parameters to the baselines; ours adds 0.12M and 0.52M
(little branches, 1x1 expansions, fusion units). The only unit counts we found that match both
figures drop units arbitrarily (e.g. a one-unit big branch in stage 4), which is tuning, not
reading. The 1.5x row cannot be reached at all: 1.29M parameters above its baseline at equal
MACs. Parameters that cost no MACs can only sit in the classifier, and a wider classifier input
needs a wider conv5, which costs 64 MACs per parameter at 8x8 (conv5 2048 at 1.5x: 5.53M, 340
MMACs). That figure is most likely a typo in the paper.
"""

import dataclasses

import keras
from keras import layers, ops

from bl_keras.layers.blocks import batch_norm, conv_init, pad
from bl_keras.layers.merge import UpsampleAdd
from bl_keras.layers.shuffle import ChannelShuffle
from bl_keras.models import common

MIN_IMAGE_SIZE = 32
STEM_FILTERS = 24
STAGE_REPEATS = (3, 7, 3)  # basic (stride-1) units of stages 2-4, after each downsampling unit


@dataclasses.dataclass(frozen=True)
class ShuffleNetV2Spec:
    stage_filters: tuple  # output channels of stages 2, 3, 4
    conv5_filters: int  # channels of the last 1x1 convolution


SPECS = {
    0.5: ShuffleNetV2Spec((48, 96, 192), 1024),
    1.0: ShuffleNetV2Spec((116, 232, 464), 1024),
    1.5: ShuffleNetV2Spec((176, 352, 704), 1024),
    2.0: ShuffleNetV2Spec((244, 488, 976), 2048),
}


def apply_depthwise_bn(x, strides, name):
    """3x3 depthwise conv (no bias; explicit symmetric padding when strided) + BN."""
    if strides != 1:
        x = pad(1, f"{name}_pad")(x)
    x = layers.DepthwiseConv2D(
        3,
        strides=strides,
        padding="same" if strides == 1 else "valid",
        use_bias=False,
        depthwise_initializer=conv_init(),
        name=f"{name}_conv",
    )(x)
    return batch_norm(f"{name}_bn")(x)


def apply_branch(x, filters, strides, name):
    """The main branch: 1x1 conv-BN-ReLU, 3x3 depthwise-BN (stride), 1x1 conv-BN-ReLU."""
    x = common.conv_bn(x, filters, 1, f"{name}_pw1")
    x = apply_depthwise_bn(x, strides, f"{name}_dw")
    return common.conv_bn(x, filters, 1, f"{name}_pw2")


def apply_basic_unit(x, name):
    """ShuffleNetV2 basic unit (Fig. 3c): split channels in halves, the second half through the
    branch, concatenate, shuffle. Keeps size and width."""
    channels = x.shape[-1]
    half = channels // 2
    shortcut, x = ops.split(x, [half], axis=-1)
    x = apply_branch(x, channels - half, 1, f"{name}_branch2")
    x = layers.Concatenate(name=f"{name}_concat")([shortcut, x])
    return ChannelShuffle(2, name=f"{name}_shuffle")(x)


def apply_down_unit(x, filters, strides, name):
    """ShuffleNetV2 downsampling unit (Fig. 3d): both branches see the whole input, each gives
    `filters // 2` channels; with stride 1 it only changes the width."""
    branch1 = apply_depthwise_bn(x, strides, f"{name}_branch1_dw")
    branch1 = common.conv_bn(branch1, filters // 2, 1, f"{name}_branch1_pw")
    branch2 = apply_branch(x, filters // 2, strides, f"{name}_branch2")
    x = layers.Concatenate(name=f"{name}_concat")([branch1, branch2])
    return ChannelShuffle(2, name=f"{name}_shuffle")(x)


def apply_unit(x, filters, strides, name):
    """A basic unit where shape allows, otherwise a downsampling unit."""
    if strides == 1 and x.shape[-1] == filters:
        return apply_basic_unit(x, name)
    return apply_down_unit(x, filters, strides, name)


def apply_stage(x, filters, units, strides, name):
    """A plain stage: a downsampling unit with `strides`, then basic units (`units` in all)."""
    for i in range(units):
        x = apply_unit(x, filters, strides if i == 0 else 1, f"{name}_unit{i + 1}")
    return x


def little_width(filters, alpha):
    """`filters // alpha` rounded down to an even count (units split channels in halves)."""
    width = filters // alpha // 2 * 2
    if width < 2:
        raise ValueError(f"alpha={alpha} leaves the little branch no channels of {filters}")
    return width


def apply_big_little_module(x, filters, basic_units, alpha, beta, fusion_strides, name):
    """One Big-Little module replacing a stage of `basic_units` (L) basic units.

    Big branch: L - 1 units at half resolution, the first strided. Little branch:
    max(1, L // beta - 1) units `filters // alpha` wide at full resolution, then 1x1 conv + BN to
    `filters`. Merge: upsample the big output, add, ReLU. Fusion: a downsampling unit with stride
    `fusion_strides` (2), or a basic unit (1).
    """
    big = x
    for i in range(max(1, basic_units - 1)):
        big = apply_unit(big, filters, 2 if i == 0 else 1, f"{name}_big_unit{i + 1}")
    little = x
    width = little_width(filters, alpha)
    for i in range(max(1, basic_units // beta - 1)):
        little = apply_unit(little, width, 1, f"{name}_little_unit{i + 1}")
    little = common.conv_bn(little, filters, 1, f"{name}_little_expand", relu=False)
    x = UpsampleAdd(name=f"{name}_merge")([big, little])
    x = layers.ReLU(name=f"{name}_merge_relu")(x)
    return apply_unit(x, filters, fusion_strides, f"{name}_fusion")


def check_width_multiplier(width_multiplier):
    if (
        isinstance(width_multiplier, bool)
        or not isinstance(width_multiplier, (int, float))
        or width_multiplier not in SPECS
    ):
        raise ValueError(
            f"width_multiplier must be one of {tuple(SPECS)}, got {width_multiplier!r}"
        )
    return SPECS[width_multiplier]


def model_name(width_multiplier, big_little):
    prefix = "bl_" if big_little else ""
    return f"{prefix}shufflenet_v2_x{str(float(width_multiplier)).replace('.', '_')}"


def build_shufflenet_v2(
    width_multiplier=1.0,
    big_little=False,
    alpha=2,
    beta=2,
    include_top=True,
    weights=None,
    input_shape=(None, None, 3),
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
):
    """ShuffleNetV2 with `width_multiplier`; `big_little=True` gives bL-ShuffleNetV2 (see the
    module docstring for the reading of the paper)."""
    spec = check_width_multiplier(width_multiplier)
    common.check_head_args(include_top, weights, classes)
    if big_little:
        common.check_alpha_beta(alpha, beta)
        for filters in spec.stage_filters:
            little_width(filters, alpha)
    name = model_name(width_multiplier, big_little)
    inputs = common.image_input(input_shape, MIN_IMAGE_SIZE, name)
    x = common.check_image_size(MIN_IMAGE_SIZE, name)(inputs)
    x = common.preprocess(x, include_preprocessing)
    x = common.conv_bn(x, STEM_FILTERS, 3, "stem", strides=2)
    # Zero padding equals PyTorch's -inf padding here: the input is non-negative after ReLU.
    x = pad(1, "stem_pool_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    if big_little:
        x = apply_down_unit(x, spec.stage_filters[0], 2, "stage2_down")
        last = len(spec.stage_filters) - 1
        for stage, (filters, units) in enumerate(zip(spec.stage_filters, STAGE_REPEATS)):
            x = apply_big_little_module(
                x, filters, units, alpha, beta, 1 if stage == last else 2, f"stage{stage + 2}"
            )
    else:
        for stage, (filters, units) in enumerate(zip(spec.stage_filters, STAGE_REPEATS)):
            x = apply_stage(x, filters, units + 1, 2, f"stage{stage + 2}")
    x = common.conv_bn(x, spec.conv5_filters, 1, "conv5")
    outputs = common.classifier_head(x, include_top, pooling, classes, classifier_activation)
    model = keras.Model(inputs, outputs, name=name)
    return common.load_weights(model, weights)


def shufflenet_v2(width_multiplier=1.0, **kwargs):
    """ShuffleNetV2 (Ma et al., 2018), torchvision layout; 1x: 2,278,604 parameters, 145 MMACs
    at 224.

    Args: width_multiplier (0.5, 1.0, 1.5 or 2.0), include_top, weights (path), input_shape (at
    least 32x32), pooling, classes, classifier_activation (None for logits),
    include_preprocessing (model takes RGB in [0, 255] and normalises inside).
    """
    return build_shufflenet_v2(width_multiplier, big_little=False, **kwargs)


def bl_shufflenet_v2(width_multiplier=1.0, alpha=2, beta=2, **kwargs):
    """bL-ShuffleNetV2 (Big-Little Net, Chen et al., ICLR 2019, Table 9: alpha=2, beta=2,
    evaluated at 256x256). How the paper was read, and our counts against Table 9, are in the
    module docstring of `bl_keras.models.shufflenet`.

    Args: width_multiplier (0.5, 1.0, 1.5 or 2.0), alpha, beta (little-branch width and depth
    reduction, positive integers), include_top, weights (path), input_shape (at least 32x32),
    pooling, classes, classifier_activation (None for logits), include_preprocessing (model
    takes RGB in [0, 255] and normalises inside).
    """
    return build_shufflenet_v2(width_multiplier, big_little=True, alpha=alpha, beta=beta, **kwargs)
