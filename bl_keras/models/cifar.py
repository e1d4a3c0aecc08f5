"""CIFAR-size ResNets (He et al., 2016, section 4.2) and their Big-Little versions, for fast
experiments on small machines (32x32 inputs, any number of classes).

Baseline ResNet-(6n+2): 3x3 conv 16, then three stages of n basic blocks with 16, 32, 64
channels at 32x32, 16x16, 8x8. Shortcuts that change shape use the Big-Little shortcut
(AvgPool + 1x1 conv + BN) rather than the paper's zero-padding option A, so ResNet-20 has 272,474
trainable parameters instead of ~270k.

Big-Little version, mirroring how bL-ResNet-50 maps onto ResNet-50's last two stages: stage 1 is
a Big-Little module (big branch at 16x16, little at 32x32, fusion stride 2), stage 2 a Big-Little
module with fusion stride 1 (big at 8x8, little at 16x16), stage 3 a plain stage with stride 2.
Every stage keeps the baseline's width; the little branches are alpha times narrower.
"""

import keras

from bl_keras.layers.big_little import BigLittleModule
from bl_keras.layers.blocks import ResidualBlock
from bl_keras.models import common

MIN_IMAGE_SIZE = 8
CIFAR_FILTERS = (16, 32, 64)
CIFAR_DEPTHS = (20, 32, 44, 56)


def _basic_stage(x, filters, blocks, strides, name):
    for i in range(blocks):
        x = ResidualBlock(
            filters, "basic", strides=strides if i == 0 else 1, name=f"{name}_block{i + 1}"
        )(x)
    return x


def build_cifar_resnet(
    depth,
    big_little=False,
    alpha=2,
    beta=4,
    merge="add",
    upsample="nearest",
    include_top=True,
    weights=None,
    input_shape=(32, 32, 3),
    pooling=None,
    classes=10,
    classifier_activation="softmax",
    include_preprocessing=True,
):
    """ResNet-`depth` for 32x32 images; `big_little=True` gives its Big-Little version."""
    if depth not in CIFAR_DEPTHS:
        raise ValueError(f"depth must be one of {CIFAR_DEPTHS}, got {depth!r}")
    common.check_head_args(include_top, weights, classes)
    if big_little:
        common.check_alpha_beta(alpha, beta)
    name = f"{'bl_' if big_little else ''}resnet{depth}_cifar"
    n = (depth - 2) // 6
    inputs = common.image_input(input_shape, MIN_IMAGE_SIZE, name)
    x = common.check_image_size(MIN_IMAGE_SIZE, name)(inputs)
    x = common.preprocess(x, include_preprocessing)
    x = common.conv_bn(x, CIFAR_FILTERS[0], 3, "stem")
    if big_little:
        for stage, strides in zip(range(2), (2, 1)):
            x = BigLittleModule(
                CIFAR_FILTERS[stage],
                n,
                alpha=alpha,
                beta=beta,
                strides=strides,
                merge=merge,
                upsample=upsample,
                block_type="basic",
                name=f"stage{stage + 1}",
            )(x)
        x = _basic_stage(x, CIFAR_FILTERS[2], n, 2, "stage3")
    else:
        for stage in range(3):
            x = _basic_stage(
                x, CIFAR_FILTERS[stage], n, 1 if stage == 0 else 2, f"stage{stage + 1}"
            )
    outputs = common.classifier_head(x, include_top, pooling, classes, classifier_activation)
    model = keras.Model(inputs, outputs, name=name)
    return common.load_weights(model, weights)


def _builder(depth, big_little):
    def builder(**kwargs):
        return build_cifar_resnet(depth, big_little=big_little, **kwargs)

    builder.__name__ = f"{'bl_' if big_little else ''}resnet{depth}_cifar"
    builder.__doc__ = build_cifar_resnet.__doc__
    return builder


resnet20_cifar = _builder(20, False)
resnet32_cifar = _builder(32, False)
resnet44_cifar = _builder(44, False)
resnet56_cifar = _builder(56, False)
bl_resnet20_cifar = _builder(20, True)
bl_resnet32_cifar = _builder(32, True)
bl_resnet44_cifar = _builder(44, True)
bl_resnet56_cifar = _builder(56, True)
