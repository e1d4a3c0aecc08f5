"""The CIFAR networks of seed 002 (`bl_keras.models.multires`): exact parameter and MAC counts
of the named models (Tables 1-4, built at full size, never run), their structure, and a tiny
model that trains.

Counts are derived here from the architecture, not read back from the code: a 3x3 conv costs
H * W * Cin * Cout * 9 MACs at each active level (H * W / 4^r at level r); at 32x32 with four
levels the spatial sizes sum to 1024 * (1 + 1/4 + 1/16 + 1/64) = 1360.
"""

import functools

import keras
import numpy as np
import pytest

from bl_keras import models, profile
from bl_keras.layers.multires import DepthMix, MultiResConv, architecture_weights
from bl_keras.models.multires import PREDEFINED_LEVELS

NAMES = ("multires_10x64", "multires_8x128", "multires_eff_8x128", "multires_10x64_nopool",
         "multires_10x64_uniform", "multires_10x64_predefined", "multires_10x64_depth",
         "multires_20x64_depth")
SPATIAL_4_LEVELS = 1024 + 256 + 64 + 16


def conv_params(depth, width, classes=10):
    return 3 * width * 9 + (depth - 2) * width * width * 9 + width * classes * 9


@functools.cache
def full(name):
    return models.get(name)


@functools.cache
def macs(name):
    return profile.count_macs(full(name), 32)


def multires(model):
    return [layer for layer in model.layers if isinstance(layer, MultiResConv)]


def test_all_registered():
    registered = set(models.list_models())
    assert set(NAMES) <= registered
    for name in NAMES:
        assert full(name).name == name


@pytest.mark.parametrize("name,depth,width", [("multires_10x64", 10, 64),
                                              ("multires_8x128", 8, 128)])
def test_conv_models_exact_counts(name, depth, width):
    model = full(name)
    params = conv_params(depth, width)
    assert params == {10: 302_400, 8: 899_712}[depth]
    assert profile.count_params(model) == params
    assert macs(name) == SPATIAL_4_LEVELS * params
    assert macs(name) == {10: 411_264_000, 8: 1_223_608_320}[depth]
    layers = multires(model)
    assert [layer.name for layer in layers] == [f"layer{i}" for i in range(1, depth + 1)]
    assert all(layer.active == (0, 1, 2, 3) and layer.block == "conv" for layer in layers)
    assert [layer.filters for layer in layers] == [width] * (depth - 1) + [10]
    # count_params leaves out the architecture weights: one logit per level per layer.
    arch = architecture_weights(model)
    assert [tuple(w.shape) for w in arch] == [(4,)] * depth
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == params + 4 * depth
    # The logits are the output: global average pooling, then softmax, no dense head.
    assert model.output_shape == (None, 10)
    assert not any(isinstance(layer, keras.layers.Dense) for layer in model.layers)


def test_nopool_exact_counts():
    assert profile.count_params(full("multires_10x64_nopool")) == 302_400
    assert macs("multires_10x64_nopool") == 1024 * 302_400 == 309_657_600
    assert all(layer.active == (0,) for layer in multires(full("multires_10x64_nopool")))
    # Only one level: nothing to mix, nothing to search.
    assert architecture_weights(full("multires_10x64_nopool")) == []


def test_eff_conv_counts():
    model = full("multires_eff_8x128")
    mbconv = 128 * 768 + 9 * 768 + (768 * 32 + 32) + (32 * 768 + 768) + 768 * 128
    assert mbconv == 253_472
    params = 3 * 128 * 9 + 6 * mbconv + 128 * 10 * 9
    assert params == 1_535_808
    assert profile.count_params(model) == params
    assert abs(params - 1.536e6) / 1.536e6 < 0.03
    # Spatial convs per pixel at each level, plus the SE's two dense layers once per level.
    per_pixel = 3 * 128 * 9 + 6 * (128 * 768 + 9 * 768 + 768 * 128) + 128 * 10 * 9
    expected = SPATIAL_4_LEVELS * per_pixel + 6 * 4 * (768 * 32 + 32 * 768)
    assert macs("multires_eff_8x128") == expected
    assert abs(expected - 1.689e9) / 1.689e9 < 0.01
    assert [layer.block for layer in multires(model)] == ["conv"] + ["mbconv"] * 6 + ["conv"]


def test_uniform_equals_learned_counts_without_architecture_weights():
    model = full("multires_10x64_uniform")
    assert profile.count_params(model) == profile.count_params(full("multires_10x64"))
    assert macs("multires_10x64_uniform") == macs("multires_10x64")
    assert architecture_weights(model) == []
    assert all(not layer.mixing_logits.trainable for layer in multires(model))
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 302_400


def test_predefined_one_level_per_layer():
    model = full("multires_10x64_predefined")
    assert len(PREDEFINED_LEVELS) == 10
    assert [layer.active for layer in multires(model)] == [(r,) for r in PREDEFINED_LEVELS]
    assert profile.count_params(model) == 302_400
    per_layer = [3 * 64] + [64 * 64] * 8 + [64 * 10]
    expected = sum(1024 // 4**r * 9 * c for r, c in zip(PREDEFINED_LEVELS, per_layer))
    assert macs("multires_10x64_predefined") == expected
    assert architecture_weights(model) == []


@pytest.mark.parametrize("name,depth", [("multires_10x64_depth", 10),
                                        ("multires_20x64_depth", 20)])
def test_learned_depth_models(name, depth):
    model = full(name)
    (mix,) = [layer for layer in model.layers if isinstance(layer, DepthMix)]
    inbound = mix._inbound_nodes[0].input_tensors
    assert len(inbound) == depth - 2
    # The inputs are the outputs of layers 2..L-1, and the mix feeds the last layer.
    sources = [t._keras_history.operation.name for t in inbound]
    assert sources == [f"layer{i}" for i in range(2, depth)]
    last = model.get_layer(f"layer{depth}")
    assert last._inbound_nodes[0].input_tensors[0]._keras_history.operation is mix
    arch = architecture_weights(model)
    assert id(mix.beta_logits) in [id(w) for w in arch]
    assert tuple(mix.beta_logits.shape) == (depth - 2,) and mix.beta_logits.trainable
    assert len(arch) == depth + 1
    assert profile.count_params(model) == conv_params(depth, 64)
    if depth == 10:
        assert macs(name) == macs("multires_10x64")


def test_too_small_input_shape():
    with pytest.raises(ValueError, match=r"levels=4.*8x8"):
        models.multires_10x64(input_shape=(4, 4, 3))
    with pytest.raises(ValueError, match="depth"):
        models.multires_cifar(2, 8)
    with pytest.raises(ValueError, match=r"2: \[\[0\], \[1\]\]"):
        models.multires_cifar(3, 8, levels=2, input_shape=(8, 8, 3), active=[[0], [1]])


# ---------------------------------------------------------------------------------------------
# 9. A tiny model trains; preprocessing and logits options.


def tiny(**kwargs):
    return models.multires_cifar(4, 8, levels=3, input_shape=(16, 16, 3), classes=3, **kwargs)


def learnable_problem(n=24, seed=0):
    """Class k: noise plus a bright square in the k-th third of the image (in [0, 255])."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    x = rng.uniform(0, 100, size=(n, 16, 16, 3))
    for i, k in enumerate(labels):
        x[i, :, 5 * k:5 * k + 6] += 150
    return x.astype(np.float32), labels


def test_tiny_model_trains():
    keras.utils.set_random_seed(0)
    model = tiny()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    x, y = learnable_problem()
    before = model.evaluate(x, y, batch_size=24, verbose=0)
    for _ in range(30):
        model.train_on_batch(x, y)
    after = model.evaluate(x, y, batch_size=24, verbose=0)
    assert after < 0.6 * before, (before, after)
    # The mixing logits learn too (they are trained with the weights here).
    assert any(np.abs(keras.ops.convert_to_numpy(w)).max() > 1e-4
               for w in architecture_weights(model))


def copy_weights(source, target):
    for layer in target.layers:
        if layer.weights and layer.name != "preprocess":
            layer.set_weights(source.get_layer(layer.name).get_weights())


def test_preprocessing_and_logits_options():
    x, _ = learnable_problem(4, seed=1)
    reference = tiny()
    for w in architecture_weights(reference):
        w.assign(np.random.default_rng(2).normal(size=w.shape).astype(np.float32))
    probabilities = keras.ops.convert_to_numpy(reference(x, training=False))
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-6)

    raw = tiny(include_preprocessing=False)
    assert not any(layer.name == "preprocess" for layer in raw.layers)
    copy_weights(reference, raw)
    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    normalised = ((x - mean) / std).astype(np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(raw(normalised, training=False)),
                               probabilities, rtol=1e-5, atol=1e-6)
    assert not np.allclose(keras.ops.convert_to_numpy(raw(x, training=False)), probabilities,
                           atol=1e-3)

    logits_model = tiny(classifier_activation=None)
    copy_weights(reference, logits_model)
    logits = keras.ops.convert_to_numpy(logits_model(x, training=False))
    assert not np.allclose(logits.sum(-1), 1.0, atol=1e-3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(logits)),
                               probabilities, rtol=1e-5, atol=1e-6)
