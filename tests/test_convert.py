"""Official PyTorch Big-Little Net weights -> Keras (`bl_keras.convert`, `apps.convert_weights`).

Checked against the reference data produced by the official code (see shared/reference/README.md):
official logits reproduced, every official key placed in the right variable with the right
layout, and one block's layout checked against torch.nn.functional.
"""

import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REFERENCE

from bl_keras import convert, models
from bl_keras.layers.blocks import ResidualBlock

REPO = pathlib.Path(__file__).resolve().parents[1]
BL_RESNET50 = REFERENCE / "bl_resnet50"
STATE_NPZ = BL_RESNET50 / "bl_resnet50_state_dict_fp16.npz"
IO_NPZ = BL_RESNET50 / "bl_resnet50_io.npz"
KEY_TABLES = REFERENCE / "official_state_dict_keys"
TOLERANCE = 1e-3  # README: ~1e-4 is float32 rounding, above 1e-3 is a structural difference


@pytest.fixture(scope="module")
def reference_io():
    with np.load(IO_NPZ) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def reference_state():
    with np.load(STATE_NPZ) as data:
        return {key: data[key] for key in data.files}


def bl_resnet50(**kwargs):
    return models.bl_resnet50(include_preprocessing=False, classifier_activation=None, **kwargs)


def logits_error(model, images_nchw, expected):
    logits = model(np.transpose(images_nchw, (0, 2, 3, 1)), training=False)
    return float(np.abs(keras.ops.convert_to_numpy(logits) - expected).max())


def check_official_logits(model, io):
    errors = [
        logits_error(model, io["input_nchw"], io["logits"]),
        logits_error(model, io["input_odd_nchw"], io["logits_odd"]),
    ]
    print(f"max abs logit differences (224x224, 200x200): {errors}")
    assert max(errors) <= TOLERANCE, errors


def read_key_table(name):
    """The official state dict's keys and shapes, from the reference TSV."""
    table = {}
    lines = (KEY_TABLES / f"{name}_state_dict.tsv").read_text().splitlines()
    for line in lines[1:]:
        key, shape, _ = line.split("\t")
        table[key] = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
    return table


def random_state(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {
        key: np.array(7, np.int64) if key.endswith("num_batches_tracked")
        else rng.standard_normal(shape).astype(np.float32)
        for key, shape in shapes.items()
    }


# --- 1, 2: the official logits -------------------------------------------------------------


def test_fp16_npz_reproduces_official_logits(reference_io):
    state = convert.read_state_dict(STATE_NPZ)
    assert {a.dtype for a in state.values()} == {np.dtype(np.float32)}  # fp16 cast, no int64
    model = convert.load_official_weights(bl_resnet50(), STATE_NPZ)
    check_official_logits(model, reference_io)


def test_pth_tar_checkpoint_through_the_builder(reference_state, reference_io, tmp_path):
    path = tmp_path / "blresnet50.pth.tar"
    state = {"module." + k: torch.from_numpy(v) for k, v in reference_state.items()}
    torch.save({"epoch": 90, "arch": "blresnet50", "state_dict": state}, path)
    model = bl_resnet50(weights=path)
    check_official_logits(model, reference_io)


def test_feature_extractor_takes_all_but_the_classifier(reference_state, reference_io):
    full = convert.load_official_weights(bl_resnet50(), reference_state)
    features = bl_resnet50(include_top=False, pooling="avg")
    convert.load_official_weights(features, reference_state)
    x = np.transpose(reference_io["input_nchw"], (0, 2, 3, 1))
    pooled = keras.ops.convert_to_numpy(features(x, training=False))
    fc = full.get_layer("predictions")
    logits = pooled @ keras.ops.convert_to_numpy(fc.kernel) + keras.ops.convert_to_numpy(fc.bias)
    np.testing.assert_allclose(logits, reference_io["logits"], atol=TOLERANCE)


# --- 3: every key, every variable, every layout ---------------------------------------------

STEM_NAMES = {
    "stem_conv": "conv1", "stem_bn": "bn1", "stem_big_conv": "b_conv0", "stem_big_bn": "bn_b0",
    "stem_little1_conv": "l_conv0", "stem_little1_bn": "bn_l0", "stem_little2_conv": "l_conv1",
    "stem_little2_bn": "bn_l1", "stem_little3_conv": "l_conv2", "stem_little3_bn": "bn_l2",
    "stem_fuse_conv": "bl_init", "stem_fuse_bn": "bn_bl_init", "predictions": "fc",
}
PARAM_NAMES = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
               "moving_mean": "running_mean", "moving_variance": "running_var"}


def official_key(path, shapes):
    """Our variable path -> official key, written independently of the converter. The
    shortcut's index is read off the official table: its conv is the 4-d `downsample.0/1`."""
    first, *inner, param = path.split("/")
    if first in STEM_NAMES:
        parts = [STEM_NAMES[first]]
    elif match := re.fullmatch(r"stage(\d)_block(\d+)", first):
        parts = [f"layer{match[1]}", str(int(match[2]) - 1)]
    else:
        parts = ["layer" + re.fullmatch(r"stage(\d)", first)[1]]
    for name in inner:
        if match := re.fullmatch(r"(big|little)_block(\d+)", name):
            parts += [match[1], str(int(match[2]) - 1)]
        elif name in ("fusion_block", "little_e_conv", "little_e_bn", "se"):
            parts += {"fusion_block": ["fusion", "0"], "little_e_conv": ["little_e", "0"],
                      "little_e_bn": ["little_e", "1"], "se": ["se_layer"]}[name]
        elif name in ("downsample_conv", "downsample_bn"):
            prefix = ".".join(parts)
            conv = 1 if len(shapes.get(f"{prefix}.downsample.1.weight", ())) == 4 else 0
            parts += ["downsample", str(conv + (name == "downsample_bn"))]
        else:
            parts.append(name)
    return ".".join([*parts, PARAM_NAMES[param]])


def keras_layout(array, keras_ndim):
    if array.ndim == 4 and keras_ndim == 2:  # SE 1x1 conv -> dense
        return array[:, :, 0, 0].T
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    return array.T if array.ndim == 2 else array


@pytest.mark.parametrize(
    "name", ["bl_resnet50", "bl_resnet101", "bl_resnext50_32x4d", "bl_seresnext50_32x4d"]
)
def test_official_key_table_loads_exactly(name):
    shapes = read_key_table(name)
    state = random_state(shapes)
    model = models.get(name, alpha=2, beta=4, include_preprocessing=False)
    convert.load_official_weights(model, state)  # raises if any key or shape differs

    loaded = [key for key in shapes if not key.endswith("num_batches_tracked")]
    paths = {official_key(w.path, shapes): w for w in model.weights}
    assert sorted(paths) == sorted(loaded)
    assert len(paths) == len(model.weights)
    for key, variable in paths.items():
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(variable), keras_layout(state[key], len(variable.shape)),
            err_msg=f"{variable.path} <- {key}",
        )


# --- 4: one SE-ResNeXt block against torch.nn.functional -------------------------------------


def torch_bn(x, state, prefix):
    return F.batch_norm(x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                        state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=False,
                        eps=1e-5)


def torch_se_bottleneck(x, state, p, strides, groups):
    """The official SE-ResNeXt bottleneck written with functional ops (not the official code)."""
    y = F.relu(torch_bn(F.conv2d(x, state[f"{p}.conv1.weight"]), state, f"{p}.bn1"))
    y = F.conv2d(y, state[f"{p}.conv2.weight"], stride=strides, padding=1, groups=groups)
    y = F.relu(torch_bn(y, state, f"{p}.bn2"))
    y = torch_bn(F.conv2d(y, state[f"{p}.conv3.weight"]), state, f"{p}.bn3")
    s = y.mean(dim=(2, 3), keepdim=True)
    s = F.relu(F.conv2d(s, state[f"{p}.se_layer.fc1.weight"], state[f"{p}.se_layer.fc1.bias"]))
    y = y * torch.sigmoid(
        F.conv2d(s, state[f"{p}.se_layer.fc2.weight"], state[f"{p}.se_layer.fc2.bias"])
    )
    shortcut, index = x, 0
    if strides == 2:
        shortcut, index = F.avg_pool2d(x, 3, 2, 1, count_include_pad=True), 1
    shortcut = F.conv2d(shortcut, state[f"{p}.downsample.{index}.weight"])
    shortcut = torch_bn(shortcut, state, f"{p}.downsample.{index + 1}")
    return F.relu(y + shortcut)


def random_block_state(p, in_ch, width, out_ch, groups, strides, rng):
    def conv(o, i, k):
        return rng.normal(0, np.sqrt(2 / (i * k * k)), (o, i, k, k))

    def bn(prefix, n):
        return {f"{prefix}.weight": rng.uniform(0.5, 1.5, n),
                f"{prefix}.bias": rng.normal(0, .1, n),
                f"{prefix}.running_mean": rng.normal(0, .1, n),
                f"{prefix}.running_var": rng.uniform(0.5, 1.5, n),
                f"{prefix}.num_batches_tracked": np.array(3)}

    down = 1 if strides == 2 else 0
    state = {f"{p}.conv1.weight": conv(width, in_ch, 1), **bn(f"{p}.bn1", width),
             f"{p}.conv2.weight": conv(width, width // groups, 3), **bn(f"{p}.bn2", width),
             f"{p}.conv3.weight": conv(out_ch, width, 1), **bn(f"{p}.bn3", out_ch),
             f"{p}.downsample.{down}.weight": conv(out_ch, in_ch, 1),
             **bn(f"{p}.downsample.{down + 1}", out_ch),
             f"{p}.se_layer.fc1.weight": conv(out_ch // 16, out_ch, 1),
             f"{p}.se_layer.fc1.bias": rng.normal(0, .1, out_ch // 16),
             f"{p}.se_layer.fc2.weight": conv(out_ch, out_ch // 16, 1),
             f"{p}.se_layer.fc2.bias": rng.normal(0, .1, out_ch)}
    return {k: torch.from_numpy(np.asarray(v, np.float32 if v.dtype.kind == "f" else np.int64))
            for k, v in state.items()}


@pytest.mark.parametrize("strides", [2, 1])
def test_se_resnext_block_layout_matches_torch_functional(strides):
    in_ch, width, out_ch, groups, prefix = 32, 32, 64, 4, "layer2.big.0"
    rng = np.random.default_rng(strides)
    state = random_block_state(prefix, in_ch, width, out_ch, groups, strides, rng)
    block = ResidualBlock(out_ch, strides=strides, width=width, groups=groups, se_ratio=16)
    block.build((None, 9, 11, in_ch))
    convert.assign_official(convert.block_targets(block, prefix), convert.read_state_dict(state))

    x = rng.normal(size=(2, in_ch, 9, 11)).astype(np.float32)
    expected = torch_se_bottleneck(torch.from_numpy(x), state, prefix, strides, groups).numpy()
    got = keras.ops.convert_to_numpy(block(x.transpose(0, 2, 3, 1), training=False))
    assert got.shape == expected.transpose(0, 2, 3, 1).shape
    np.testing.assert_allclose(got, expected.transpose(0, 2, 3, 1), atol=1e-4, rtol=0)


# --- 5: errors ------------------------------------------------------------------------------


def test_mismatches_are_reported_together_and_nothing_is_loaded():
    state = random_state(read_key_table("bl_resnet50"))
    del state["layer2.little.0.bn1.running_var"]
    state["module.layer9.extra.weight"] = np.zeros(3, np.float32)
    state["fc.weight"] = np.zeros((10, 2048), np.float32)
    model = bl_resnet50()
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    with pytest.raises(ValueError) as error:
        convert.load_official_weights(model, state)
    message = str(error.value)
    assert re.search(r"missing keys[^\n]*\(1\):\n  layer2\.little\.0\.bn1\.running_var\n", message)
    assert re.search(r"unexpected keys[^\n]*\(1\):\n  layer9\.extra\.weight\n", message)
    assert "fc.weight: expected (1000, 2048), got (10, 2048)" in message
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))


def test_long_mismatch_lists_are_shortened():
    state = random_state(read_key_table("bl_resnet101"))
    with pytest.raises(ValueError, match=r"\.\.\. and \d+ more") as error:
        convert.load_official_weights(bl_resnet50(), state)
    assert len(str(error.value).splitlines()) < 80


def test_bad_sources_are_refused(tmp_path, monkeypatch):
    model = bl_resnet50()
    with pytest.raises(ValueError, match=r"'.*weights\.h6'"):
        (tmp_path / "weights.h6").write_bytes(b"")
        convert.load_official_weights(model, tmp_path / "weights.h6")
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        convert.load_official_weights(model, tmp_path / "nothing.pth")
    with pytest.raises(ValueError, match="got int: 3"):
        convert.load_official_weights(model, 3)
    (tmp_path / "model.pth").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install bl_keras\[torch\]"):
        convert.load_official_weights(model, tmp_path / "model.pth")


# --- 6: the app -----------------------------------------------------------------------------


def test_convert_weights_app(tmp_path, reference_io):
    output = tmp_path / "bl_resnet50.keras"
    result = subprocess.run(
        [sys.executable, "-m", "apps.convert_weights", f"--source={STATE_NPZ}",
         "--model=bl_resnet50", f"--output={output}", "--alpha=2", "--beta=4",
         "--include_preprocessing=false", "--classifier_activation=none"],
        cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True,
        text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "bl_resnet50" in lines[0] and str(output) in lines[0], lines
    restored = keras.models.load_model(output)
    error = logits_error(restored, reference_io["input_nchw"], reference_io["logits"])
    assert error <= TOLERANCE, error
