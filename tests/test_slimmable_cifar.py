"""The universally slimmable CIFAR ResNets: the non-slimmable networks at width 1.0, narrower
and equal to their `subnetwork` at 0.5, saved with their calibrations."""

import keras
import numpy as np
import pytest

from bl_keras import profile, slimmable
from bl_keras.models import cifar
from bl_keras.models.slimmable_cifar import us_bl_resnet20_cifar, us_resnet20_cifar

RESNET20_PARAMS = 272_474
RESNET20_MACS = 40_813_184
BL_RESNET20_PARAMS = 279_786
BL_RESNET20_MACS = 27_247_232


def _images(batch, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, (batch, 32, 32, 3)).astype("float32")


def _weight_shapes(model):
    return sorted(tuple(w.shape) for w in model.trainable_weights)


@pytest.fixture(scope="module")
def model():
    """us_resnet20_cifar (logits) with random BN scales and offsets (the zero-initialised
    gammas would hide every residual branch), calibrated at 1.0 and 0.5."""
    model = us_resnet20_cifar(classifier_activation=None)
    rng = np.random.RandomState(1)
    for weight in model.weights:
        if weight.name in ("gamma", "beta"):
            low, high = (0.5, 1.5) if weight.name == "gamma" else (-0.2, 0.2)
            weight.assign(rng.uniform(low, high, weight.shape).astype("float32"))
    for width in (1.0, 0.5):
        slimmable.calibrate_batch_norm(model, [_images(4)], width=width)
    return model


def test_full_width_is_resnet20(model):
    plain = cifar.resnet20_cifar()
    full = slimmable.subnetwork(model, 1.0)
    assert profile.count_params(full) == profile.count_params(plain) == RESNET20_PARAMS
    assert profile.count_macs(full, 32) == profile.count_macs(plain, 32) == RESNET20_MACS
    assert _weight_shapes(model) == _weight_shapes(plain)


def test_full_width_is_bl_resnet20():
    model = us_bl_resnet20_cifar()
    plain = cifar.bl_resnet20_cifar()
    assert profile.count_params(model) == profile.count_params(plain) == BL_RESNET20_PARAMS
    assert _weight_shapes(model) == _weight_shapes(plain)
    slimmable.calibrate_batch_norm(model, [_images(2)], width=1.0)
    assert profile.count_macs(model, 32) == profile.count_macs(plain, 32) == BL_RESNET20_MACS


def test_half_width_equals_its_subnetwork(model):
    x = _images(2, seed=2)
    slimmable.set_width(model, 1.0)
    full = keras.ops.convert_to_numpy(model(x))
    slimmable.set_width(model, 0.5)
    half = keras.ops.convert_to_numpy(model(x))
    assert np.abs(half - full).max() > 1e-3
    sub = slimmable.subnetwork(model, 0.5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sub(x)), half, atol=1e-5)
    assert profile.count_macs(sub, 32) < RESNET20_MACS
    assert profile.count_params(sub) < RESNET20_PARAMS


def test_keras_round_trip_keeps_width_and_statistics(model, tmp_path):
    x = _images(2, seed=3)
    slimmable.set_width(model, 0.5)
    path = tmp_path / "us_resnet20.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert slimmable.get_width(loaded) == 0.5
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)),
                                  keras.ops.convert_to_numpy(model(x)))


@pytest.mark.parametrize("width", [0.2, 1.5])
def test_width_outside_the_range_raises(model, width):
    with pytest.raises(ValueError, match=r"outside the range \[0.25, 1\]"):
        slimmable.set_width(model, width)


def test_divisor_too_coarse_for_the_little_branch_raises_at_set_width():
    model = us_bl_resnet20_cifar(divisor=8)
    with pytest.raises(ValueError, match="stage1_little_block1_conv1.*above its full width"):
        slimmable.set_width(model, 0.25)


def test_big_little_arguments_are_checked():
    with pytest.raises(ValueError, match="alpha applies to the Big-Little models"):
        us_resnet20_cifar(alpha=2)
    with pytest.raises(ValueError, match="merge='concat'"):
        us_bl_resnet20_cifar(merge="concat")
