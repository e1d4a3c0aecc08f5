"""ResNet, ResNeXt, SE-ResNeXt and their Big-Little versions (ImageNet size).

One spec table, one builder. Baselines follow torchvision's layout (stride on the 3x3 conv,
ResNet-50 = 25,557,032 parameters, 4.089 GMACs at 224) with the official Big-Little Net shortcut
(AvgPool + 1x1 conv, same parameter and MAC count as torchvision's strided 1x1). Big-Little models
follow IBM/BigLittleNet exactly: the bL stem (no max-pool), Big-Little modules for stages 1-3
(strides 2, 2, 1) and a plain stage 4 with stride 2.
"""

import dataclasses

import keras
from keras import layers

from bl_keras.layers.big_little import BigLittleModule
from bl_keras.layers.blocks import ResidualBlock, bottleneck_width, pad
from bl_keras.models import common

MIN_IMAGE_SIZE = 32
STAGE_FILTERS = (256, 512, 1024, 2048)


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    blocks: tuple  # residual blocks per stage (4 stages)
    groups: int = 1  # cardinality of the 3x3 convolutions (ResNeXt)
    base_width: int = 64  # channels per group at 64 output channels ("4d" of 32x4d)
    se_ratio: int = 0  # squeeze-excitation reduction, 0 for none
    big_little: bool = False  # Big-Little version (bL stem, bL modules in stages 1-3)


# Block counts of the baselines, and the official redistribution for bL-ResNet-101/152.
RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BL_RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (4, 8, 18, 3), 152: (5, 12, 30, 3)}

SPECS = {
    "resnet50": ResNetSpec(RESNET_BLOCKS[50]),
    "resnet101": ResNetSpec(RESNET_BLOCKS[101]),
    "resnet152": ResNetSpec(RESNET_BLOCKS[152]),
    "resnext50_32x4d": ResNetSpec(RESNET_BLOCKS[50], groups=32, base_width=4),
    "resnext101_32x4d": ResNetSpec(RESNET_BLOCKS[101], groups=32, base_width=4),
    "resnext101_64x4d": ResNetSpec(RESNET_BLOCKS[101], groups=64, base_width=4),
    "seresnext50_32x4d": ResNetSpec(RESNET_BLOCKS[50], groups=32, base_width=4, se_ratio=16),
    "seresnext101_32x4d": ResNetSpec(RESNET_BLOCKS[101], groups=32, base_width=4, se_ratio=16),
    "bl_resnet50": ResNetSpec(BL_RESNET_BLOCKS[50], big_little=True),
    "bl_resnet101": ResNetSpec(BL_RESNET_BLOCKS[101], big_little=True),
    "bl_resnet152": ResNetSpec(BL_RESNET_BLOCKS[152], big_little=True),
    "bl_resnext50_32x4d": ResNetSpec(
        BL_RESNET_BLOCKS[50], groups=32, base_width=4, big_little=True
    ),
    "bl_resnext101_32x4d": ResNetSpec(
        BL_RESNET_BLOCKS[101], groups=32, base_width=4, big_little=True
    ),
    "bl_resnext101_64x4d": ResNetSpec(
        BL_RESNET_BLOCKS[101], groups=64, base_width=4, big_little=True
    ),
    "bl_seresnext50_32x4d": ResNetSpec(
        BL_RESNET_BLOCKS[50], groups=32, base_width=4, se_ratio=16, big_little=True
    ),
    "bl_seresnext101_32x4d": ResNetSpec(
        BL_RESNET_BLOCKS[101], groups=32, base_width=4, se_ratio=16, big_little=True
    ),
}


def residual_stage(x, spec, filters, blocks, strides, name):
    """A plain ResNet stage: `blocks` residual blocks, the first with `strides`."""
    width = bottleneck_width(filters, spec.groups, spec.base_width)
    for i in range(blocks):
        x = ResidualBlock(
            filters,
            strides=strides if i == 0 else 1,
            width=width,
            groups=spec.groups,
            se_ratio=spec.se_ratio,
            name=f"{name}_block{i + 1}",
        )(x)
    return x


def resnet_stem(x):
    """7x7/2 conv + BN + ReLU, 3x3/2 max-pool (padding 1; zero padding equals PyTorch's -inf
    padding here because the input is non-negative after ReLU)."""
    x = common.conv_bn(x, 64, 7, "stem", strides=2)
    x = pad(1, "stem_pool_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)


def big_little_stem(x, alpha):
    """The first Big-Little module (Table 4): conv 7x7/2 64, then a big path (3x3/2 64 + BN)
    and a little path (3x3 64/alpha, 3x3/2 64/alpha, 1x1 64 + BN) added, ReLU, 1x1 64 + BN +
    ReLU. No max-pool."""
    x = common.conv_bn(x, 64, 7, "stem", strides=2)
    big = common.conv_bn(x, 64, 3, "stem_big", strides=2, relu=False)
    little = common.conv_bn(x, 64 // alpha, 3, "stem_little1")
    little = common.conv_bn(little, 64 // alpha, 3, "stem_little2", strides=2)
    little = common.conv_bn(little, 64, 1, "stem_little3", relu=False)
    x = layers.Add(name="stem_merge")([big, little])
    x = layers.ReLU(name="stem_merge_relu")(x)
    return common.conv_bn(x, 64, 1, "stem_fuse")


def build_resnet(
    spec,
    name,
    alpha=2,
    beta=4,
    merge="add",
    upsample="nearest",
    include_top=True,
    weights=None,
    input_shape=(None, None, 3),
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
):
    """Builds the functional model that `spec` describes (see `SPECS`)."""
    common.check_head_args(include_top, weights, classes)
    if spec.big_little:
        common.check_alpha_beta(alpha, beta)
    inputs = common.image_input(input_shape, MIN_IMAGE_SIZE, name)
    x = common.check_image_size(MIN_IMAGE_SIZE, name)(inputs)
    x = common.preprocess(x, include_preprocessing)
    if spec.big_little:
        x = big_little_stem(x, alpha)
        for stage, strides in zip(range(3), (2, 2, 1)):
            x = BigLittleModule(
                STAGE_FILTERS[stage],
                spec.blocks[stage],
                alpha=alpha,
                beta=beta,
                strides=strides,
                merge=merge,
                upsample=upsample,
                groups=spec.groups,
                base_width=spec.base_width,
                se_ratio=spec.se_ratio,
                name=f"stage{stage + 1}",
            )(x)
        x = residual_stage(x, spec, STAGE_FILTERS[3], spec.blocks[3], 2, "stage4")
    else:
        x = resnet_stem(x)
        for stage in range(4):
            strides = 1 if stage == 0 else 2
            x = residual_stage(
                x, spec, STAGE_FILTERS[stage], spec.blocks[stage], strides, f"stage{stage + 1}"
            )
    outputs = common.classifier_head(x, include_top, pooling, classes, classifier_activation)
    model = keras.Model(inputs, outputs, name=name)
    return common.load_weights(model, weights)


def _builder(model_name):
    spec = SPECS[model_name]

    if spec.big_little:

        def builder(alpha=2, beta=4, **kwargs):
            return build_resnet(spec, model_name, alpha=alpha, beta=beta, **kwargs)

        builder.__doc__ = (
            f"{model_name}: Big-Little Net (Chen et al., ICLR 2019), blocks per stage "
            f"{spec.blocks}, exact to the official IBM/BigLittleNet model.\n\n"
            "Args: alpha, beta (little-branch width and depth reduction), merge ('add' or "
            "'concat'), upsample ('nearest' or 'bilinear'), include_top, weights (path), "
            "input_shape, pooling, classes, classifier_activation (None for logits), "
            "include_preprocessing (model takes RGB in [0, 255] and normalises inside)."
        )
    else:

        def builder(**kwargs):
            return build_resnet(spec, model_name, **kwargs)

        builder.__doc__ = (
            f"{model_name}: baseline with blocks per stage {spec.blocks} (torchvision layout).\n\n"
            "Args: include_top, weights, input_shape, pooling, classes, classifier_activation, "
            "include_preprocessing, as the Big-Little models."
        )
    builder.__name__ = model_name
    return builder


resnet50 = _builder("resnet50")
resnet101 = _builder("resnet101")
resnet152 = _builder("resnet152")
resnext50_32x4d = _builder("resnext50_32x4d")
resnext101_32x4d = _builder("resnext101_32x4d")
resnext101_64x4d = _builder("resnext101_64x4d")
seresnext50_32x4d = _builder("seresnext50_32x4d")
seresnext101_32x4d = _builder("seresnext101_32x4d")
bl_resnet50 = _builder("bl_resnet50")
bl_resnet101 = _builder("bl_resnet101")
bl_resnet152 = _builder("bl_resnet152")
bl_resnext50_32x4d = _builder("bl_resnext50_32x4d")
bl_resnext101_32x4d = _builder("bl_resnext101_32x4d")
bl_resnext101_64x4d = _builder("bl_resnext101_64x4d")
bl_seresnext50_32x4d = _builder("bl_seresnext50_32x4d")
bl_seresnext101_32x4d = _builder("bl_seresnext101_32x4d")
