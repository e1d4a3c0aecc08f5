"""Model builders, keras.applications style, and a name -> builder table.

>>> from bl_keras import models
>>> model = models.get("bl_resnet50", alpha=2, beta=4, classes=10)
"""

from bl_keras.models import cifar, multires, resnet, slimmable, slimmable_cifar
from bl_keras.models.cifar import (
    bl_resnet20_cifar,
    bl_resnet32_cifar,
    bl_resnet44_cifar,
    bl_resnet56_cifar,
    resnet20_cifar,
    resnet32_cifar,
    resnet44_cifar,
    resnet56_cifar,
)
from bl_keras.models.multires import (
    multires_8x128,
    multires_10x64,
    multires_10x64_depth,
    multires_10x64_nopool,
    multires_10x64_predefined,
    multires_10x64_uniform,
    multires_20x64_depth,
    multires_cifar,
    multires_eff_8x128,
)
from bl_keras.models.resnet import (
    bl_resnet50,
    bl_resnet101,
    bl_resnet152,
    bl_resnext50_32x4d,
    bl_resnext101_32x4d,
    bl_resnext101_64x4d,
    bl_seresnext50_32x4d,
    bl_seresnext101_32x4d,
    resnet50,
    resnet101,
    resnet152,
    resnext50_32x4d,
    resnext101_32x4d,
    resnext101_64x4d,
    seresnext50_32x4d,
    seresnext101_32x4d,
)
from bl_keras.models.shufflenet import bl_shufflenet_v2, shufflenet_v2
from bl_keras.models.slimmable import (
    mobilenet_v1,
    mobilenet_v2,
    us_mobilenet_v1,
    us_mobilenet_v2,
)
from bl_keras.models.slimmable_cifar import (
    us_bl_resnet20_cifar,
    us_bl_resnet32_cifar,
    us_bl_resnet44_cifar,
    us_bl_resnet56_cifar,
    us_resnet20_cifar,
    us_resnet32_cifar,
    us_resnet44_cifar,
    us_resnet56_cifar,
)
from bl_keras.models.speech import bl_pyr_resnet22_speech, bl_resnet22_speech, resnet22_speech

_MODELS = {
    builder.__name__: builder
    for builder in (
        resnet50,
        resnet101,
        resnet152,
        resnext50_32x4d,
        resnext101_32x4d,
        resnext101_64x4d,
        seresnext50_32x4d,
        seresnext101_32x4d,
        bl_resnet50,
        bl_resnet101,
        bl_resnet152,
        bl_resnext50_32x4d,
        bl_resnext101_32x4d,
        bl_resnext101_64x4d,
        bl_seresnext50_32x4d,
        bl_seresnext101_32x4d,
        resnet20_cifar,
        resnet32_cifar,
        resnet44_cifar,
        resnet56_cifar,
        bl_resnet20_cifar,
        bl_resnet32_cifar,
        bl_resnet44_cifar,
        bl_resnet56_cifar,
        shufflenet_v2,
        bl_shufflenet_v2,
        resnet22_speech,
        bl_resnet22_speech,
        bl_pyr_resnet22_speech,
        *multires.MODELS,
        *slimmable.MODELS,
        *slimmable_cifar.MODELS,
    )
}


def list_models():
    """Names accepted by `get`, sorted."""
    return sorted(_MODELS)


def get(name, **kwargs):
    """Builds the model registered as `name` with the builder's keyword arguments."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODELS[name](**kwargs)


__all__ = ["cifar", "get", "list_models", "multires", "multires_cifar", "resnet", "slimmable",
           "slimmable_cifar", *_MODELS,
           "multires_10x64", "multires_8x128", "multires_eff_8x128", "multires_10x64_nopool",
           "multires_10x64_uniform", "multires_10x64_predefined", "multires_10x64_depth",
           "multires_20x64_depth", "mobilenet_v1", "mobilenet_v2", "us_mobilenet_v1",
           "us_mobilenet_v2", "us_resnet20_cifar", "us_resnet32_cifar", "us_resnet44_cifar",
           "us_resnet56_cifar", "us_bl_resnet20_cifar", "us_bl_resnet32_cifar",
           "us_bl_resnet44_cifar", "us_bl_resnet56_cifar"]
