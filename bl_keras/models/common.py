"""What every image model shares: input checks, in-model preprocessing, the stem's conv-BN-ReLU
and the classification head, with keras.applications' argument conventions."""

import keras
from keras import layers

from bl_keras.layers.blocks import batch_norm, check_positive_int, conv, pad

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_alpha_beta(alpha, beta):
    check_positive_int("alpha", alpha)
    check_positive_int("beta", beta)


def image_input(input_shape, min_size, model_name):
    """`keras.Input` for NHWC images, refusing sizes the network cannot take."""
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    for size in input_shape[:2]:
        if size is not None and size < min_size:
            raise ValueError(
                f"{model_name} needs inputs of at least {min_size}x{min_size}, "
                f"got input_shape={tuple(input_shape)!r}"
            )
    return keras.Input(shape=input_shape, name="image")


def check_image_size(min_size, model_name):
    """A layer that fails with a clear error when a dynamic-size model gets a too-small image."""
    return MinImageSize(min_size, name=f"{model_name}_min_size")


@keras.saving.register_keras_serializable(package="bl_keras")
class MinImageSize(layers.Layer):
    """Identity that raises a ValueError naming the size when the image is smaller than `size`.

    Models accept `(None, None, 3)` inputs. The size is checked whenever it is known as the
    model is called or traced: eager calls, and `fit`/`predict`/`evaluate`, which trace with the
    batch's concrete shape. A graph traced with unknown sizes (an export with a `None` size)
    cannot check it.

    Args:
        size: smallest height and width accepted.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        for dim in (h, w):
            if dim is not None and dim < self.size:
                raise ValueError(
                    f"input images must be at least {self.size}x{self.size}, "
                    f"got {h}x{w}"
                )
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def preprocess(x, include_preprocessing):
    """RGB in [0, 255] -> ImageNet-normalised, inside the model (keras.applications style)."""
    if not include_preprocessing:
        return x
    mean = [255.0 * m for m in IMAGENET_MEAN]
    variance = [(255.0 * s) ** 2 for s in IMAGENET_STD]
    return layers.Normalization(mean=mean, variance=variance, name="preprocess")(x)


def conv_bn(x, filters, kernel_size, name, strides=1, groups=1, relu=True):
    """Conv (no bias, PyTorch padding) + BN [+ ReLU] as named functional layers."""
    if strides != 1 and kernel_size > 1:
        x = pad(kernel_size // 2, f"{name}_pad")(x)
    x = conv(filters, kernel_size, f"{name}_conv", strides=strides, groups=groups)(x)
    x = batch_norm(f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def classifier_head(x, include_top, pooling, classes, classifier_activation):
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        # float32 even under a mixed-precision policy: softmax and the loss need the range.
        return layers.Dense(classes, activation=classifier_activation, dtype="float32",
                            name="predictions")(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    if pooling is not None:
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    return x


def check_head_args(include_top, weights, classes):
    if include_top:
        check_positive_int("classes", classes)
    if weights is not None and not isinstance(weights, (str, dict)) and not hasattr(
        weights, "__fspath__"
    ):
        raise ValueError(f"weights must be None or a path, got {weights!r}")


def load_weights(model, weights):
    """`weights=PATH` for every builder: a `.keras`/`.weights.h5` file of ours, or an official
    PyTorch checkpoint / `.npz` / mapping, converted by `bl_keras.convert`."""
    if weights is None:
        return model
    path = str(weights) if not isinstance(weights, dict) else None
    if path is not None and path.endswith((".weights.h5", ".keras")):
        model.load_weights(path)
        return model
    from bl_keras.convert import load_official_weights

    load_official_weights(model, weights)
    return model
