"""Slimmable layers and `bl_keras.slimmable`: the official channel rule, set_width on every
call path, BN post-statistics, sub-networks of ordinary layers, and their errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import tiny_slimmable_model
from keras import layers

from bl_keras import profile, slimmable
from bl_keras.layers.slimmable import SlimmableConv2D, make_divisible, slim_channels

RANGE = (0.25, 1.0)
SIZE = 12
tiny_model = tiny_slimmable_model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    calib = [rng.normal(size=(4, SIZE, SIZE, 3)).astype("float32") for _ in range(3)]
    test = rng.normal(size=(3, SIZE, SIZE, 3)).astype("float32")
    labels = np.array([0, 3, 1], "int32")
    return calib, test, labels


@pytest.fixture(scope="module")
def calibrated(data):
    calib, _, _ = data
    model = tiny_model()
    for width in (1.0, 0.5):
        slimmable.calibrate_batch_norm(model, calib, width=width)
    slimmable.set_width(model, 1.0)
    return model


def test_channel_rule_is_the_official_one():
    # make_divisible(v) = max(1, int(v + 4) // 8 * 8), +8 where that is below 0.9 v.
    assert [make_divisible(v) for v in (32, 8, 10.8, 3.0, 0.5, 36.4)] == [32, 8, 16, 9, 1, 40]
    # MobileNetV2's ratio: 24 channels at 0.45 expand to 6 * make_divisible(10.8) = 96.
    assert slim_channels(24 * 6, 0.45, ratio=6) == 96
    assert slim_channels(1024, 0.25) == 256 and slim_channels(1280, 0.35) == 448
    assert slim_channels(16, 0.25, divisor=2) == 4


def test_a_width_that_rounds_above_full_width_names_the_layer():
    # With divisor 8 an 8-channel layer at 0.25 rounds to 9, above its full width of 8.
    inputs = keras.Input((8, 8, 3))
    outputs = SlimmableConv2D(8, 1, slim_in=False, width_range=RANGE, name="narrow")(inputs)
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="'narrow'.*rounds its 8 channels to 9"):
        slimmable.set_width(model, 0.25)
    small_divisor = keras.Model(inputs, SlimmableConv2D(
        8, 1, slim_in=False, divisor=2, width_range=RANGE, name="narrow2")(inputs))
    slimmable.set_width(small_divisor, 0.25)
    assert small_divisor(np.zeros((1, 8, 8, 3), "float32")).shape[-1] == 2


def test_width_outside_the_range_names_the_range(calibrated):
    for width in (0.1, 1.5):
        with pytest.raises(ValueError, match=r"outside the range \[0.25, 1\]"):
            slimmable.set_width(calibrated, width)
    with pytest.raises(ValueError, match="must be a number"):
        slimmable.set_width(calibrated, "half")
    with pytest.raises(ValueError, match="no slimmable layers"):
        slimmable.set_width(keras.Sequential([layers.Dense(2)]), 0.5)


def test_uncalibrated_inference_is_a_clear_error(data):
    _, test, _ = data
    model = tiny_model()
    with pytest.raises(ValueError, match="width 1 has no BatchNorm statistics.*calibrate"):
        model(test)
    with pytest.raises(ValueError, match="has no BatchNorm statistics"):
        model.predict(test, verbose=0)
    # Training mode needs no statistics (batch statistics, as the official code).
    assert model(test, training=True).shape == (3, 5)


def _sub_output(model, width, x, training=False):
    return keras.ops.convert_to_numpy(slimmable.subnetwork(model, width)(x, training=training))


def test_set_width_holds_on_eager_predict_and_evaluate(calibrated, data):
    _, test, labels = data
    model = calibrated
    expected = _sub_output(model, 0.5, test)
    slimmable.set_width(model, 1.0)
    full = keras.ops.convert_to_numpy(model(test))
    full_predict = model.predict(test, verbose=0)
    np.testing.assert_allclose(full_predict, full, atol=1e-6)
    slimmable.set_width(model, 0.5)
    assert np.abs(full - expected).max() > 1e-3
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(test)), expected, atol=1e-5)
    np.testing.assert_allclose(model.predict(test, verbose=0), expected, atol=1e-5)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss_half = model.evaluate(test, labels, verbose=0)
    expected_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        labels, expected)
    np.testing.assert_allclose(loss_half, float(expected_loss), rtol=1e-5)
    slimmable.set_width(model, 1.0)
    assert abs(model.evaluate(test, labels, verbose=0) - loss_half) > 1e-4


@pytest.mark.parametrize("jit_compile", [False, True])
def test_set_width_holds_in_compiled_training_steps(data, jit_compile):
    calib, test, labels = data
    model = tiny_model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss, jit_compile=jit_compile)
    losses = {}
    for width in (1.0, 0.5, 1.0):
        slimmable.set_width(model, width)
        losses.setdefault(width, []).append(float(model.train_on_batch(test, labels)))
    slimmable.calibrate_batch_norm(model, calib, width=0.5)
    sub = slimmable.subnetwork(model, 0.5)
    inference = keras.ops.convert_to_numpy(sub(test))
    # training mode: both normalise with the batch's statistics (the plain BN also updates
    # its moving statistics, hence the inference output first).
    expected = float(loss(labels, sub(test, training=True)))
    np.testing.assert_allclose(losses[0.5][0], expected, rtol=1e-5)
    assert abs(losses[1.0][0] - expected) > 1e-4
    np.testing.assert_allclose(losses[1.0][0], losses[1.0][1], rtol=1e-6)
    if jit_compile:
        np.testing.assert_allclose(model.predict(test, verbose=0), inference, atol=1e-5)


def test_calibration_is_the_equal_weight_average_of_batch_statistics(data):
    calib, _, _ = data
    model = tiny_model()
    slimmable.calibrate_batch_norm(model, calib, width=0.5)
    stem = keras.Model(model.input, model.get_layer("stem").output)
    slimmable.set_width(stem, 0.5)
    means, variances = [], []
    for batch in calib:
        values = keras.ops.convert_to_numpy(stem(batch)).astype("float64")
        values = values.reshape(-1, values.shape[-1])
        means.append(values.mean(0))
        variances.append(values.var(0, ddof=1))
    mean, variance = model.get_layer("stem_bn").statistics[(0.5, (SIZE, SIZE))]
    assert mean.shape == (16,)
    np.testing.assert_allclose(mean, np.mean(means, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance, np.mean(variances, 0), rtol=1e-5)


def test_calibration_errors_and_limits(data):
    calib, _, _ = data
    model = tiny_model()
    with pytest.raises(ValueError, match="got no batches"):
        slimmable.calibrate_batch_norm(model, [], width=0.5)
    with pytest.raises(ValueError, match="one resolution: got 8x8 after 12x12"):
        slimmable.calibrate_batch_norm(model, [calib[0], calib[0][:, :8, :8]])
    # The failed calibrations left nothing behind; a tf.data Dataset of (images, labels)
    # works and stops after num_images.
    assert slimmable.calibrated(model) == []
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.concatenate(calib), np.zeros(12, "int32"))).batch(4).repeat()
    assert slimmable.calibrate_batch_norm(model, dataset, width=0.75, num_images=8) == 8
    assert slimmable.calibrated(model) == [(0.75, (SIZE, SIZE))]


def test_statistics_per_resolution(data):
    calib, test, _ = data
    model = tiny_model()
    small = [batch[:, :8, :8] for batch in calib]
    slimmable.calibrate_batch_norm(model, calib, width=0.5)
    slimmable.calibrate_batch_norm(model, small, width=0.5)
    slimmable.set_width(model, 0.5)
    with pytest.raises(ValueError, match=r"several resolutions \(12x12, 8x8\)"):
        model(test)
    slimmable.set_width(model, 0.5, resolution=8)
    at_8 = keras.ops.convert_to_numpy(model(test))
    slimmable.set_width(model, 0.5, resolution=12)
    assert np.abs(keras.ops.convert_to_numpy(model(test)) - at_8).max() > 1e-4


def test_saved_model_keeps_width_and_statistics(calibrated, data, tmp_path):
    _, test, _ = data
    slimmable.set_width(calibrated, 0.5)
    expected = keras.ops.convert_to_numpy(calibrated(test))
    path = tmp_path / "slim.keras"
    calibrated.save(path)
    restored = keras.models.load_model(path)
    assert slimmable.get_width(restored) == 0.5
    assert slimmable.calibrated(restored) == [(0.5, (SIZE, SIZE)), (1.0, (SIZE, SIZE))]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(test)), expected)
    slimmable.set_width(restored, 1.0)
    slimmable.set_width(calibrated, 1.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(test)),
                                  keras.ops.convert_to_numpy(calibrated(test)))


def test_subnetwork_is_plain_keras_with_its_own_cost(calibrated, data, tmp_path):
    _, test, _ = data
    sub = slimmable.subnetwork(calibrated, 0.5)
    kinds = {type(layer) for layer in sub.layers}
    assert not any(issubclass(kind, slimmable.SlimmableLayer) for kind in kinds)
    assert {layers.Conv2D, layers.DepthwiseConv2D, layers.Dense,
            layers.BatchNormalization} <= kinds
    assert slimmable.get_width(calibrated) == 1.0  # the source model keeps its width
    # 0.5 x 32 = 16 stem channels, 32 pointwise: params of the sliced layers only.
    stem, pointwise = 3 * 3 * 3 * 16, 16 * 32
    bns = 2 * (16 + 16 + 32)
    assert profile.count_params(sub) == stem + 9 * 16 + pointwise + bns + 32 * 5 + 5
    assert profile.count_macs(sub, (SIZE, SIZE, 3)) == 36 * (stem + 9 * 16 + pointwise) + 160
    path = tmp_path / "sub.keras"
    sub.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(test)),
                                  keras.ops.convert_to_numpy(sub(test)))
    with pytest.raises(ValueError, match="subnetwork.*width 0.75 has no BatchNorm"):
        slimmable.subnetwork(calibrated, 0.75)


def test_count_macs_follows_the_width(calibrated):
    full = profile.count_macs(calibrated, (SIZE, SIZE, 3))
    slimmable.set_width(calibrated, 0.5)
    try:
        half = profile.count_macs(calibrated, (SIZE, SIZE, 3))
    finally:
        slimmable.set_width(calibrated, 1.0)
    assert half == profile.count_macs(slimmable.subnetwork(calibrated, 0.5), (SIZE, SIZE, 3))
    assert half < full


def test_a_tensor_width_runs_every_width_in_one_trace(calibrated, data):
    _, test, _ = data

    @tf.function
    def forward(images, width):
        with slimmable.using_width(calibrated, width):
            return calibrated(images, training=True)

    for width in (0.3, 0.5, 0.72, 1.0):
        slimmable.set_width(calibrated, width)
        expected = keras.ops.convert_to_numpy(calibrated(test, training=True))
        got = forward(test, tf.constant(width))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, atol=1e-5)
    slimmable.set_width(calibrated, 1.0)
    assert forward.experimental_get_tracing_count() == 1
