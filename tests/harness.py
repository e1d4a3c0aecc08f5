"""One small harness every layer and model goes through (after keras-hub's run_layer_test):
symbolic and eager calls agree on shapes, config round-trips, one training step runs, and a
`.keras` save/load gives identical outputs without custom-object arguments."""

import keras
import numpy as np
from keras import layers

from bl_keras.layers.slimmable import (
    SlimmableBatchNormalization,
    SlimmableConv2D,
    SlimmableDense,
    SlimmableDepthwiseConv2D,
)


def run_layer_test(layer_factory, input_shape, expected_output_shape, tmp_path, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=input_shape).astype("float32")

    layer = layer_factory()
    symbolic = layer(keras.Input(batch_shape=(None, *input_shape[1:])))
    assert tuple(symbolic.shape[1:]) == tuple(expected_output_shape[1:])
    y = keras.ops.convert_to_numpy(layer(x))
    assert y.shape == tuple(expected_output_shape)
    assert tuple(layer.compute_output_shape(input_shape)) == tuple(expected_output_shape)

    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    inputs = keras.Input(shape=input_shape[1:])
    outputs = layer_factory()(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    target = np.zeros((input_shape[0], *expected_output_shape[1:]), "float32")
    model.train_on_batch(x, target)
    check_save_load(model, x, tmp_path)
    return model


def check_save_load(model, x, tmp_path):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(x, training=False)),
        keras.ops.convert_to_numpy(restored(x, training=False)),
    )
    return restored


def tiny_slimmable_model(width_range=(0.25, 1.0), divisor=8, classes=5):
    """Stem (RGB not slimmed), depthwise-separable block, residual-free head: every layer
    kind, a strided symmetric-padded conv included."""
    kw = {"width_range": width_range}
    inputs = keras.Input((None, None, 3))
    x = layers.ZeroPadding2D(1)(inputs)
    x = SlimmableConv2D(32, 3, strides=2, slim_in=False, divisor=divisor, name="stem", **kw)(x)
    x = SlimmableBatchNormalization(name="stem_bn", **kw)(x)
    x = layers.ReLU(6.0)(x)
    x = SlimmableDepthwiseConv2D(3, padding="same", name="dw", **kw)(x)
    x = SlimmableBatchNormalization(name="dw_bn", **kw)(x)
    x = layers.ReLU(6.0)(x)
    x = SlimmableConv2D(64, 1, divisor=divisor, name="pw", **kw)(x)
    x = SlimmableBatchNormalization(name="pw_bn", **kw)(x)
    x = layers.ReLU(6.0)(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = SlimmableDense(classes, name="fc", **kw)(x)
    return keras.Model(inputs, outputs, name="tiny_slimmable")
