"""Behaviour of the multi-resolution convolution of seed 002 (`bl_keras.layers.multires`).

Eq. 4-5: y = sum_r softmax(logits)_r * U_r(B(S_r x)), where S_r is the 2x2/2 pool applied r
times, B a 3x3 conv (filters shared by every level), ReLU and a BN without scale or offset with
each level's own statistics, U_r an upsample to the input's exact size. The references below
are written in numpy (the pooling is applied repeatedly, 2x2 at a time, to check the layer's
one-shot pooling against it); only the bilinear resize is Keras' own
(`keras.ops.image.resize(..., "bilinear", antialias=False)`). Eq. 6's depth mix (`DepthMix`) is
`sum_i softmax(beta)_i x_i`.

Sizes are tiny (8-16 channels, 8x8 to 32x32).
"""

import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import check_save_load
from keras.src import testing

from bl_keras import export, models, profile
from bl_keras.layers.multires import (
    DepthMix,
    MultiResConv,
    architecture_weights,
    network_weights,
    upsample_to_size,
)

EPS = 1e-5
TOL = dict(rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The numpy reference.


def pool2(x, mode):
    """One 2x2/2 pool of NHWC `x`, "valid" (odd sizes floor)."""
    n, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    blocks = x[:, : 2 * h2, : 2 * w2].reshape(n, h2, 2, w2, 2, c)
    return blocks.max(axis=(2, 4)) if mode == "max" else blocks.mean(axis=(2, 4))


def conv3x3_same(x, kernel):
    """3x3 (or any odd k) stride-1 "same" convolution without bias, in float64."""
    k = kernel.shape[0]
    p = k // 2
    n, h, w, _ = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[-1]))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nhwc,cd->nhwd", padded[:, i:i + h, j:j + w], kernel[i, j])
    return out


def batch_norm(y, training, mean=None, var=None):
    """BN without scale or offset: the batch's biased statistics in training, else the given."""
    if training:
        mean, var = y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))
    return (y - mean) / np.sqrt(var + EPS)


def torch_nearest_indices(in_size, out_size):
    """PyTorch's nearest rule: src = min(floor(dst * (in / out)), in - 1), in float32."""
    scale = np.float32(in_size) / np.float32(out_size)
    idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(int)
    return np.minimum(idx, in_size - 1)


def upsample(y, size, mode):
    if y.shape[1:3] == tuple(size):
        return y
    if mode == "nearest":
        rows = torch_nearest_indices(y.shape[1], size[0])
        cols = torch_nearest_indices(y.shape[2], size[1])
        return y[:, rows][:, :, cols]
    resized = keras.ops.image.resize(y.astype(np.float32), size, interpolation="bilinear",
                                     antialias=False)
    return keras.ops.convert_to_numpy(resized).astype(np.float64)


def softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def level_output(x, r, kernel, pool, upsample_mode, training, stats):
    """U_r(B(S_r x)) for one level: pool r times, conv, ReLU, BN, upsample to x's size."""
    s = x.astype(np.float64)
    for _ in range(r):
        s = pool2(s, pool)
    y = np.maximum(conv3x3_same(s, kernel), 0.0)
    y = batch_norm(y, training, *stats.get(r, (None, None)))
    return upsample(y, x.shape[1:3], upsample_mode)


def reference(x, levels, kernel, logits, pool="max", upsample_mode="nearest", training=False,
              stats=None):
    """Eq. 4-5 over the given level indices, softmax over the given logits."""
    alpha = softmax(logits)
    return sum(a * level_output(x, r, kernel, pool, upsample_mode, training, stats or {})
               for a, r in zip(alpha, levels))


# ---------------------------------------------------------------------------------------------
# Helpers on the layer under test.


def weight(layer, suffix):
    """The layer's weight whose path ends with `suffix` (e.g. "bn2/moving_mean")."""
    found = [w for w in layer.weights if w.path.endswith("/" + suffix)]
    assert len(found) == 1, (suffix, [w.path for w in layer.weights])
    return found[0]


def randomize_bn_stats(layer, levels, rng):
    """Random moving statistics per level, so inference-mode BN matters; returns them."""
    stats = {}
    for r in levels:
        mean = rng.normal(size=layer.filters).astype(np.float32)
        var = rng.uniform(0.5, 2.0, size=layer.filters).astype(np.float32)
        weight(layer, f"bn{r}/moving_mean").assign(mean)
        weight(layer, f"bn{r}/moving_variance").assign(var)
        stats[r] = (mean.astype(np.float64), var.astype(np.float64))
    return stats


def ids(variables):
    """Identities of variables (`in` / `==` on Keras variables compare values)."""
    return [id(v) for v in variables]


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def built_layer(x, **kwargs):
    layer = MultiResConv(**kwargs)
    layer.build(x.shape)
    return layer


# ---------------------------------------------------------------------------------------------
# 1. The conv block against the reference.


@pytest.mark.parametrize("size", [(32, 32), (13, 11), (9, 9)])
@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("upsample_mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("training", [False, True])
def test_conv_block_matches_reference(size, pool, upsample_mode, training):
    levels = 4 if size != (32, 32) or pool == "max" else 3
    rng = np.random.default_rng(zlib.crc32(repr((size, pool, upsample_mode, training)).encode()))
    x = rng.normal(size=(3, *size, 4)).astype(np.float32)
    layer = built_layer(x, filters=8, levels=levels, pool=pool, upsample=upsample_mode)
    logits = rng.normal(scale=1.5, size=levels).astype(np.float32)
    assert len(set(np.round(logits, 3))) == levels
    layer.mixing_logits.assign(logits)
    stats = randomize_bn_stats(layer, range(levels), rng)
    kernel = to_numpy(layer.conv.kernel).astype(np.float64)
    assert kernel.shape == (3, 3, 4, 8)

    got = to_numpy(layer(x, training=training))
    want = reference(x, range(levels), kernel, logits, pool, upsample_mode, training, stats)
    assert got.shape == (3, *size, 8)
    np.testing.assert_allclose(got, want, **TOL)
    # Every level contributes: dropping the coarsest one changes the output.
    partial = reference(x, range(levels - 1), kernel, logits[:-1], pool, upsample_mode,
                        training, stats)
    assert np.abs(got - partial).max() > 1e-2


def test_training_mode_updates_each_levels_own_statistics():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 16, 16, 4)).astype(np.float32)
    layer = built_layer(x, filters=8, levels=3)
    kernel = to_numpy(layer.conv.kernel).astype(np.float64)
    layer(x, training=True)
    s = x.astype(np.float64)
    for r in range(3):
        y = np.maximum(conv3x3_same(s, kernel), 0.0)
        momentum = 0.9  # Keras: moving = momentum * moving + (1 - momentum) * batch
        np.testing.assert_allclose(to_numpy(weight(layer, f"bn{r}/moving_mean")),
                                   (1 - momentum) * y.mean(axis=(0, 1, 2)), rtol=1e-4,
                                   atol=1e-6)
        s = pool2(s, "max")
    means = [to_numpy(weight(layer, f"bn{r}/moving_mean")) for r in range(3)]
    assert not np.allclose(means[0], means[2])


@pytest.mark.parametrize("in_size,factor,mode", [((4, 4), 4, "nearest"), ((3, 2), 4, "nearest"),
                                                 ((3, 2), 4, "bilinear"), ((5, 5), 2, "nearest")])
def test_upsample_to_size(in_size, factor, mode):
    out = {(4, 4): (16, 16), (3, 2): (13, 11), (5, 5): (10, 11)}[in_size]
    y = np.random.default_rng(0).normal(size=(2, *in_size, 3)).astype(np.float32)
    got = to_numpy(upsample_to_size(y, out, factor, mode))
    np.testing.assert_allclose(got, upsample(y.astype(np.float64), out, mode), **TOL)


# ---------------------------------------------------------------------------------------------
# 2. The MBConv block.


def test_mbconv_parameter_count_at_128_channels():
    layer = MultiResConv(128, levels=4, block="mbconv")
    layer.build((None, 32, 32, 128))
    sizes = {w.path.split("/", 1)[1]: int(np.prod(w.shape)) for w in layer.trainable_weights}
    assert sizes == {
        "mixing_logits": 4,
        "expand/kernel": 128 * 768,  # 98,304
        "depthwise/kernel": 9 * 768,  # 6,912
        "se_reduce/kernel": 768 * 32, "se_reduce/bias": 32,
        "se_expand/kernel": 32 * 768, "se_expand/bias": 768,  # SE 49,952 with biases
        "project/kernel": 768 * 128,  # 98,304
    }
    assert profile.count_params(layer) == 253_472
    assert sum(int(np.prod(w.shape)) for w in network_weights(layer)) == 253_472
    # Per level: three BNs without scale or offset (only moving statistics).
    assert len(layer.non_trainable_weights) == 4 * 3 * 2


def swish(z):
    return z / (1.0 + np.exp(-z))


def mbconv_reference(x, layer, r, training, stats):
    """One level of MBConv6 with SE: expand-BN-swish, depthwise-BN-swish, SE, project-BN,
    identity skip when the widths agree; the level's own BNs."""
    get = lambda name: to_numpy(weight(layer, name)).astype(np.float64)  # noqa: E731
    s = x.astype(np.float64)
    for _ in range(r):
        s = pool2(s, layer.pool)
    y = np.einsum("nhwc,cd->nhwd", s, get("expand/kernel")[0, 0])
    y = swish(batch_norm(y, training, *stats.get(f"expand_bn{r}", (None, None))))
    dw = get("depthwise/kernel")  # (3, 3, C, 1)
    n, h, w, c = y.shape
    padded = np.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)))
    z = sum(padded[:, i:i + h, j:j + w] * dw[i, j, :, 0] for i in range(3) for j in range(3))
    z = swish(batch_norm(z, training, *stats.get(f"depthwise_bn{r}", (None, None))))
    squeezed = swish(z.mean(axis=(1, 2)) @ get("se_reduce/kernel") + get("se_reduce/bias"))
    gate = 1.0 / (1.0 + np.exp(-(squeezed @ get("se_expand/kernel") + get("se_expand/bias"))))
    z = z * gate[:, None, None, :]
    out = np.einsum("nhwc,cd->nhwd", z, get("project/kernel")[0, 0])
    out = batch_norm(out, training, *stats.get(f"project_bn{r}", (None, None)))
    if s.shape[-1] == out.shape[-1]:
        out = out + s
    return upsample(out, x.shape[1:3], layer.upsample)


@pytest.mark.parametrize("channels,filters,training", [(8, 8, False), (8, 12, True)])
def test_mbconv_matches_reference(channels, filters, training):
    rng = np.random.default_rng(channels + filters)
    x = rng.normal(size=(2, 11, 13, channels)).astype(np.float32)
    layer = built_layer(x, filters=filters, levels=3, block="mbconv")
    logits = np.array([0.3, -0.8, 1.1], np.float32)
    layer.mixing_logits.assign(logits)
    stats = {}
    for r in range(3):
        for name, width in (("expand_bn", channels * 6), ("depthwise_bn", channels * 6),
                            ("project_bn", filters)):
            mean = rng.normal(size=width).astype(np.float32)
            var = rng.uniform(0.5, 2.0, size=width).astype(np.float32)
            weight(layer, f"{name}{r}/moving_mean").assign(mean)
            weight(layer, f"{name}{r}/moving_variance").assign(var)
            stats[f"{name}{r}"] = (mean.astype(np.float64), var.astype(np.float64))
    # Non-zero SE biases so the squeeze-excite is not near a constant gate.
    for name in ("se_reduce/bias", "se_expand/bias"):
        w = weight(layer, name)
        w.assign(rng.normal(size=w.shape).astype(np.float32))

    got = to_numpy(layer(x, training=training))
    assert got.shape == (2, 11, 13, filters)
    alpha = softmax(logits)
    want = sum(alpha[r] * mbconv_reference(x, layer, r, training, stats) for r in range(3))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # One level alone (active=[1]) with the same weights, against the reference level.
    single = built_layer(x, filters=filters, levels=3, block="mbconv", active=[1])
    for w in single.weights:
        suffix = w.path.split("/", 1)[1]
        if suffix != "mixing_logits":
            w.assign(weight(layer, suffix))
    np.testing.assert_allclose(to_numpy(single(x, training=training)),
                               mbconv_reference(x, layer, 1, training, stats),
                               rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# 3. Active levels (pruning).


def test_active_levels_build_and_compute_only_those_levels():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 16, 16, 4)).astype(np.float32)
    layer = built_layer(x, filters=8, levels=4, active=[2, 0])
    assert layer.active == (0, 2)
    paths = {w.path.split("/", 1)[1] for w in layer.weights}
    assert paths == {"mixing_logits", "conv/kernel", "bn0/moving_mean", "bn0/moving_variance",
                     "bn2/moving_mean", "bn2/moving_variance"}
    assert tuple(layer.mixing_logits.shape) == (2,)
    logits = np.array([0.7, -0.4], np.float32)
    layer.mixing_logits.assign(logits)
    stats = randomize_bn_stats(layer, (0, 2), rng)
    kernel = to_numpy(layer.conv.kernel).astype(np.float64)
    for training in (False, True):
        np.testing.assert_allclose(to_numpy(layer(x, training=training)),
                                   reference(x, (0, 2), kernel, logits, training=training,
                                             stats=stats), **TOL)


@pytest.mark.parametrize("size", [(16, 16), (13, 11)])
def test_single_active_level_is_unmixed(size):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, *size, 4)).astype(np.float32)
    layer = built_layer(x, filters=8, levels=4, active=[2])
    layer.mixing_logits.assign([2.5])  # a lone level's weight is softmax([z]) = 1 whatever z
    assert tuple(layer.mixing_logits.shape) == (1,)
    assert not layer.mixing_logits.trainable and layer.architecture_weights == []
    assert [w.path.split("/", 1)[1] for w in layer.trainable_weights] == ["conv/kernel"]
    stats = randomize_bn_stats(layer, (2,), rng)
    kernel = to_numpy(layer.conv.kernel).astype(np.float64)
    np.testing.assert_allclose(
        to_numpy(layer(x, training=False)),
        level_output(x, 2, kernel, "max", "nearest", False, stats), **TOL)
    assert layer.min_size == 4


def test_active_levels_drop_exactly_their_conv_macs():
    cin, cout, size = 4, 8, 16

    def one_layer(active):
        inputs = keras.Input((size, size, cin))
        return keras.Model(inputs, MultiResConv(cout, levels=4, active=active)(inputs))

    per_level = [size * size // 4**r * cin * cout * 9 for r in range(4)]
    full = profile.count_macs(one_layer(None))
    assert full == sum(per_level)
    pruned = profile.count_macs(one_layer([0, 2]))
    assert full - pruned == per_level[1] + per_level[3]
    assert profile.count_macs(one_layer([3])) == per_level[3]


# ---------------------------------------------------------------------------------------------
# 4. Errors.


def test_too_small_input_names_levels_and_size():
    layer = MultiResConv(8, levels=4)
    with pytest.raises(ValueError, match=r"levels=4.*at least 8x8.*got 4x4"):
        layer(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"levels=4.*at least 8x8.*got 7x9"):
        MultiResConv(8, levels=4)(keras.Input((7, 9, 3)))
    # Pruned to levels 0 and 1: 2x2 is enough.
    assert MultiResConv(8, levels=4, active=[0, 1])(np.zeros((1, 2, 2, 3))).shape == (1, 2, 2, 8)
    # A dynamic-size model checks the size when it is called.
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, MultiResConv(8, levels=3)(inputs))
    with pytest.raises(ValueError, match=r"levels=3.*at least 4x4.*got 3x8"):
        model(np.zeros((1, 3, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"levels=3.*at least 4x4"):
        models.multires_cifar(4, 8, levels=3, input_shape=(3, 3, 3))


@pytest.mark.parametrize("kwargs,match", [
    ({"block": "dense"}, "'dense'"),
    ({"pool": "min"}, "'min'"),
    ({"upsample": "bicubic"}, "'bicubic'"),
    ({"mixing": "softmax"}, "'softmax'"),
    ({"active": [0, 4]}, r"\[0, 4\]"),
    ({"active": []}, r"\[\]"),
    ({"active": [1, 1]}, r"\[1, 1\]"),
    ({"active": [-1]}, r"\[-1\]"),
    ({"active": ["a"]}, r"\['a'\]"),
])
def test_bad_arguments_quote_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiResConv(8, levels=4, **kwargs)


def test_depth_mix_errors():
    with pytest.raises(ValueError, match="'max'"):
        DepthMix(mixing="max")
    with pytest.raises(ValueError, match=r"\(2, 8, 8, 4\).*\(2, 8, 8, 6\)"):
        DepthMix()([np.zeros((2, 8, 8, 4)), np.zeros((2, 8, 8, 6))])
    with pytest.raises(ValueError, match=r"\(None, 4, 4, 4\)"):
        DepthMix()([keras.Input((8, 8, 4)), keras.Input((4, 4, 4))])


# ---------------------------------------------------------------------------------------------
# 5. Mixing weights are architecture weights.


def test_learned_mixing_logits_are_architecture_weights():
    inputs = keras.Input((16, 16, 3))
    layer = MultiResConv(8, levels=4, name="mr")
    model = keras.Model(inputs, MultiResConv(4, levels=2, name="mr2")(layer(inputs)))
    logits = layer.mixing_logits
    assert tuple(logits.shape) == (4,) and logits.trainable
    np.testing.assert_array_equal(to_numpy(logits), np.zeros(4))
    np.testing.assert_allclose(to_numpy(layer.mixing_weights()), np.full(4, 0.25), atol=1e-7)
    assert ids(layer.architecture_weights) == ids([logits])
    arch = architecture_weights(model)
    assert [w.path for w in arch] == ["mr/mixing_logits", "mr2/mixing_logits"]
    network = network_weights(model)
    assert {w.path for w in network} == {"mr/conv/kernel", "mr2/conv/kernel"}
    assert len(arch) + len(network) == len(model.trainable_weights)
    assert profile.count_params(model) == 3 * 8 * 9 + 8 * 4 * 9
    # The logits get a gradient through the mixture.
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True) * tf.range(4, dtype=tf.float32))
    grads = tape.gradient(loss, [w.value for w in arch])
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_uniform_mixing_is_fixed_and_equal():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 16, 16, 4)).astype(np.float32)
    layer = built_layer(x, filters=8, levels=3, mixing="uniform")
    assert layer.architecture_weights == []
    assert not layer.mixing_logits.trainable
    assert id(layer.mixing_logits) in ids(layer.non_trainable_weights)
    assert [w.path.split("/", 1)[1] for w in layer.trainable_weights] == ["conv/kernel"]
    inputs = keras.Input((16, 16, 4))
    model = keras.Model(inputs, MultiResConv(8, levels=3, mixing="uniform")(inputs))
    assert architecture_weights(model) == []
    assert ids(network_weights(model)) == ids(model.trainable_weights)
    kernel = to_numpy(layer.conv.kernel).astype(np.float64)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)),
                               reference(x, range(3), kernel, np.zeros(3), training=True), **TOL)


def test_depth_mix_is_softmax_weighted_sum():
    rng = np.random.default_rng(9)
    xs = [rng.normal(size=(2, 8, 8, 4)).astype(np.float32) for _ in range(3)]
    mix = DepthMix()
    np.testing.assert_allclose(to_numpy(mix(xs)), sum(xs) / 3, **TOL)  # beta starts equal
    assert tuple(mix.beta_logits.shape) == (3,) and mix.beta_logits.trainable
    assert ids(mix.architecture_weights) == ids([mix.beta_logits])
    beta = np.array([1.2, -0.5, 0.1], np.float32)
    mix.beta_logits.assign(beta)
    alpha = softmax(beta)
    np.testing.assert_allclose(to_numpy(mix(xs)), sum(a * x for a, x in zip(alpha, xs)), **TOL)

    uniform = DepthMix(mixing="uniform")
    inputs = [keras.Input((8, 8, 4)) for _ in range(3)]
    model = keras.Model(inputs, uniform(inputs))
    assert uniform.architecture_weights == [] and architecture_weights(model) == []
    assert id(uniform.beta_logits) in ids(uniform.non_trainable_weights)
    np.testing.assert_allclose(to_numpy(model(xs)), sum(xs) / 3, **TOL)


# ---------------------------------------------------------------------------------------------
# 6. Keras' own layer harness (build, symbolic/eager, config, training step, mixed precision).


class MultiResHarnessTest(testing.TestCase):
    def test_conv_block(self):
        self.run_layer_test(
            MultiResConv,
            init_kwargs={"filters": 6, "levels": 4, "pool": "avg", "upsample": "bilinear"},
            input_shape=(2, 8, 8, 4),
            expected_output_shape=(2, 8, 8, 6),
            expected_num_trainable_weights=2,  # conv kernel + mixing logits
            expected_num_non_trainable_weights=4 * 2,  # per level: moving mean and variance
            supports_masking=False,
            run_training_check=True,
            run_mixed_precision_check=True,
        )

    def test_mbconv_block(self):
        self.run_layer_test(
            MultiResConv,
            init_kwargs={"filters": 6, "levels": 3, "block": "mbconv"},
            input_shape=(2, 8, 8, 4),
            expected_output_shape=(2, 8, 8, 6),
            # logits, expand, depthwise, SE (2 kernels, 2 biases), project
            expected_num_trainable_weights=1 + 1 + 1 + 4 + 1,
            expected_num_non_trainable_weights=3 * 3 * 2,
            supports_masking=False,
            run_training_check=True,
            run_mixed_precision_check=True,
        )

    def test_single_active_level(self):
        self.run_layer_test(
            MultiResConv,
            init_kwargs={"filters": 6, "levels": 4, "active": [1]},
            input_shape=(2, 8, 8, 4),
            expected_output_shape=(2, 8, 8, 6),
            # Nothing to mix: the lone logit is not trained (it would get no gradient).
            expected_num_trainable_weights=1,
            expected_num_non_trainable_weights=2 + 1,
            supports_masking=False,
            run_training_check=True,
            run_mixed_precision_check=True,
        )

    def test_depth_mix(self):
        # A list of shapes: Keras' training check feeds it through a generator whose list
        # output_signature tf.data refuses (a harness limitation, not the layer's), so the
        # training step runs in the tuple-of-shapes test below.
        self.run_layer_test(
            DepthMix,
            init_kwargs={},
            input_shape=[(2, 8, 8, 6)] * 3,
            expected_output_shape=(2, 8, 8, 6),
            expected_num_trainable_weights=1,
            expected_num_non_trainable_weights=0,
            supports_masking=False,
            run_training_check=False,
            run_mixed_precision_check=True,
        )

    def test_depth_mix_tuple_inputs_training(self):
        self.run_layer_test(
            DepthMix,
            init_kwargs={},
            input_shape=((2, 8, 8, 6), (2, 8, 8, 6)),
            expected_output_shape=(2, 8, 8, 6),
            expected_num_trainable_weights=1,
            expected_num_non_trainable_weights=0,
            supports_masking=False,
            run_training_check=True,
            run_mixed_precision_check=True,
        )


# ---------------------------------------------------------------------------------------------
# 7. Save/load, XLA, TFLite.


def images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=shape).astype(np.float32)


def randomize_model(model, seed=0):
    """Non-trivial mixing logits, betas and BN statistics, so a lost weight shows."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.path.endswith(("mixing_logits", "beta_logits", "moving_mean")):
            w.assign(rng.normal(size=w.shape).astype(np.float32))
        elif w.path.endswith("moving_variance"):
            w.assign(rng.uniform(0.5, 2.0, size=w.shape).astype(np.float32))


@pytest.mark.parametrize("kwargs", [{}, {"learn_depth": True}, {"block": "mbconv"}])
def test_save_load_without_custom_objects(kwargs, tmp_path):
    model = models.multires_cifar(4, 8, levels=3, input_shape=(16, 16, 3), **kwargs)
    randomize_model(model)
    restored = check_save_load(model, images((2, 16, 16, 3)), tmp_path)
    assert [w.path for w in architecture_weights(restored)] == \
        [w.path for w in architecture_weights(model)]
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_jit_compile_fit_and_predict_match_eager():
    keras.utils.set_random_seed(0)
    x = images((8, 16, 16, 3), seed=1)
    y = np.arange(8) % 3
    trained = []
    initial = None
    for jit in (True, False):
        model = models.multires_cifar(3, 8, levels=3, input_shape=(16, 16, 3), classes=3)
        if initial is None:
            initial = [to_numpy(w) for w in model.weights]
        else:
            model.set_weights(initial)
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy",
                      jit_compile=jit)
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
        trained.append(model)
    changed = [not np.allclose(to_numpy(w), w0) for w, w0 in zip(trained[0].weights, initial)]
    assert any(changed)
    np.testing.assert_allclose(trained[0].predict(x, verbose=0), trained[1].predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,kwargs", [(16, {}), (15, {}), (15, {"upsample": "bilinear",
                                                                   "pool": "avg"})])
def test_tflite_builtin_export_matches_keras(size, kwargs):
    model = models.multires_cifar(3, 8, levels=3, input_shape=(size, size, 3), classes=3,
                                  classifier_activation=None, **kwargs)
    randomize_model(model, seed=size)
    flatbuffer = export.to_tflite(model)
    x = images((3, size, size, 3), seed=2)
    want = to_numpy(model(x, training=False))
    got = export.tflite_predict(flatbuffer, x, batch_size=3)
    assert got.dtype == np.float32 and got.shape == (3, 3)
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
