import keras
import numpy as np
import pytest
from harness import run_layer_test

from bl_keras.layers import (
    BigLittleModule,
    ResidualBlock,
    SqueezeExcite,
    resize_nearest,
    upsample_add,
)


def torch_nearest_indices(in_size, out_size):
    """PyTorch's legacy nearest rule (aten/src/ATen/native/UpSample.h, nearest_idx)."""
    if out_size == in_size:
        return np.arange(out_size)
    if out_size == 2 * in_size:
        return np.arange(out_size) >> 1
    scale = np.float32(in_size) / np.float32(out_size)
    idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(int)
    return np.minimum(idx, in_size - 1)


@pytest.mark.parametrize("in_size,out_size", [(13, 25), (7, 14), (4, 4), (5, 9), (3, 7), (28, 56)])
def test_resize_nearest_matches_pytorch_rule(in_size, out_size):
    x = np.random.default_rng(0).normal(size=(2, in_size, in_size + 1, 3)).astype("float32")
    out_w = out_size + 2
    y = keras.ops.convert_to_numpy(resize_nearest(x, (out_size, out_w)))
    rows = torch_nearest_indices(in_size, out_size)
    cols = torch_nearest_indices(in_size + 1, out_w)
    np.testing.assert_array_equal(y, x[:, rows][:, :, cols])


@pytest.mark.parametrize("small,large", [(7, 14), (13, 25), (14, 14)])
def test_upsample_add_fast_and_general_paths_agree(small, large):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, small, small, 4)).astype("float32")
    b = rng.normal(size=(2, large, large, 4)).astype("float32")
    expected = b + keras.ops.convert_to_numpy(resize_nearest(a, (large, large)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(upsample_add(a, b)), expected, atol=1e-6)


def test_upsample_add_rejects_unknown_mode():
    with pytest.raises(ValueError, match="'cubic'"):
        upsample_add(np.zeros((1, 2, 2, 1)), np.zeros((1, 4, 4, 1)), "cubic")


@pytest.mark.parametrize(
    "kwargs,input_shape,output_shape",
    [
        (dict(filters=32, strides=2, width=8), (2, 9, 9, 16), (2, 5, 5, 32)),
        (dict(filters=16), (2, 8, 8, 16), (2, 8, 8, 16)),
        (dict(filters=32, width=16, groups=4, se_ratio=4), (2, 8, 8, 16), (2, 8, 8, 32)),
        (dict(filters=8, block_type="basic", strides=2), (2, 8, 8, 4), (2, 4, 4, 8)),
        (dict(filters=8, last_relu=False), (2, 6, 6, 8), (2, 6, 6, 8)),
    ],
)
def test_residual_block(kwargs, input_shape, output_shape, tmp_path):
    run_layer_test(lambda: ResidualBlock(**kwargs), input_shape, output_shape, tmp_path)


def test_residual_block_structure():
    block = ResidualBlock(256, strides=2, width=64)
    block.build((None, 56, 56, 64))
    kernels = {w.path.split("/", 1)[1]: tuple(w.shape) for w in block.weights if "kernel" in w.path}
    assert kernels == {
        "conv1/kernel": (1, 1, 64, 64),
        "conv2/kernel": (3, 3, 64, 64),
        "conv3/kernel": (1, 1, 64, 256),
        "downsample_conv/kernel": (1, 1, 64, 256),
    }
    assert np.all(keras.ops.convert_to_numpy(block.bns[-1].gamma) == 0)
    assert np.all(keras.ops.convert_to_numpy(block.bns[0].gamma) == 1)


def test_kernels_of_one_shape_start_different():
    """Each conv draws its own initial kernel (a shared unseeded initializer repeats itself)."""
    block = ResidualBlock(16)
    block.build((None, 8, 8, 16))
    first, second = (keras.ops.convert_to_numpy(c.kernel) for c in block.convs[:2])
    assert first.shape != second.shape or not np.array_equal(first, second)
    module = BigLittleModule(32, blocks=4)
    module.build((None, 8, 8, 32))
    big = module.branch_blocks[1]
    a, b = (keras.ops.convert_to_numpy(blk.convs[1].kernel) for blk in big[1:3])
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_residual_block_last_relu():
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 8)).astype("float32")
    with_relu = keras.ops.convert_to_numpy(ResidualBlock(8)(x))
    without = keras.ops.convert_to_numpy(ResidualBlock(8, last_relu=False)(x))
    assert with_relu.min() >= 0
    assert without.min() < 0  # zero-init last BN: the block is the identity at init


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(filters=0), "filters"),
        (dict(filters=8, strides=3), "strides"),
        (dict(filters=8, block_type="dense"), "'dense'"),
        (dict(filters=32, width=10, groups=4), "divisible"),
        (dict(filters=8, block_type="basic", groups=2), "basic"),
    ],
)
def test_residual_block_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        ResidualBlock(**bad)


def test_squeeze_excite(tmp_path):
    run_layer_test(lambda: SqueezeExcite(4), (2, 5, 5, 16), (2, 5, 5, 16), tmp_path)
    with pytest.raises(ValueError, match="-1"):
        SqueezeExcite(-1)


@pytest.mark.parametrize(
    "kwargs,input_shape,output_shape",
    [
        (dict(filters=32, blocks=3, strides=2), (2, 16, 16, 16), (2, 8, 8, 32)),
        (dict(filters=32, blocks=4, strides=1), (2, 13, 13, 16), (2, 13, 13, 32)),
        (dict(filters=32, blocks=3, upsample="bilinear"), (2, 9, 9, 16), (2, 9, 9, 32)),
        (dict(filters=32, blocks=3, merge="concat"), (2, 8, 8, 16), (2, 8, 8, 32)),
        (dict(filters=64, blocks=3, groups=8, base_width=4, se_ratio=4), (2, 8, 8, 32),
         (2, 8, 8, 64)),
        (dict(filters=16, blocks=3, block_type="basic", strides=2), (2, 10, 10, 16),
         (2, 5, 5, 16)),
        (dict(filters=32, blocks=4, branches=3, beta=2), (2, 16, 16, 16), (2, 16, 16, 32)),
    ],
)
def test_big_little_module(kwargs, input_shape, output_shape, tmp_path):
    run_layer_test(lambda: BigLittleModule(**kwargs), input_shape, output_shape, tmp_path)


def test_big_little_structure_follows_official_code():
    module = BigLittleModule(256, blocks=6, alpha=2, beta=4)
    module.build((None, 28, 28, 128))
    big, little = module.branch_blocks[1], module.branch_blocks[0]
    assert len(big) == 5 and len(little) == 1  # L - 1 and max(1, L // beta - 1)
    assert big[0].strides == 2 and all(b.strides == 1 for b in big[1:])
    assert [b.last_relu for b in big] == [True] * 4 + [False]
    assert little[0].filters == 128 and little[0].last_relu
    assert module.expand_convs[0].kernel.shape == (1, 1, 128, 256)
    assert module.expand_convs[1] is None


def test_big_little_resnext_little_branch_cardinality():
    module = BigLittleModule(256, blocks=3, alpha=2, groups=32, base_width=4)
    little, big = module.branch_blocks[0][0], module.branch_blocks[1][0]
    assert (big.groups, big.width) == (32, 128)
    assert (little.groups, little.width) == (16, 64)  # C // alpha, basewidth * alpha


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(alpha=0), "alpha must be a positive integer, got 0"),
        (dict(beta=1.5), "beta must be a positive integer, got 1.5"),
        (dict(blocks=1), "blocks >= 2, got 1"),
        (dict(merge="mul"), "'mul'"),
        (dict(upsample="area"), "'area'"),
        (dict(branches=1), "branches >= 2, got 1"),
        (dict(alpha=64), "alpha=64"),
    ],
)
def test_big_little_errors(bad, match):
    kwargs = dict(filters=32, blocks=3)
    kwargs.update(bad)
    with pytest.raises(ValueError, match=match):
        BigLittleModule(**kwargs)


def test_big_little_merge_is_addition_of_branches():
    """With zero-initialised fusion, the module output is ReLU(big_up + little) passed through
    an identity residual block: check it against the branches computed by hand."""
    rng = np.random.default_rng(0)
    module = BigLittleModule(16, blocks=3, alpha=2, beta=4)
    x = rng.normal(size=(1, 7, 7, 16)).astype("float32")
    out = keras.ops.convert_to_numpy(module(x))
    big = x
    for b in module.branch_blocks[1]:
        big = b(big)
    little = module.branch_blocks[0][0](x)
    little = module.expand_bns[0](module.expand_convs[0](little))
    big = keras.ops.convert_to_numpy(big)
    rows = torch_nearest_indices(4, 7)
    merged = np.maximum(keras.ops.convert_to_numpy(little) + big[:, rows][:, :, rows], 0)
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(module.fusion(merged)), atol=1e-5)
