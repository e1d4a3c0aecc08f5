"""US-MobileNets of MutualNet (`bl_keras.models.slimmable`) and their official weights.

Checked against the reference data of the official code (shared/reference/README.md, "Reference
data for the slimmable US-MobileNets of MutualNet"): every row of the complexity table, the
official logits after post-statistics at two (width, resolution) configs, and the official
state_dict keys. A width off the table is checked against the channel rule counted by hand.
"""

import csv
import re

import keras
import numpy as np
import pytest
import torch
from conftest import REFERENCE

from bl_keras import convert, models, profile, slimmable
from bl_keras.models.slimmable import mobilenet_v1, mobilenet_v2, us_mobilenet_v1, us_mobilenet_v2

US_REFERENCE = REFERENCE / "us_mobilenet"
needs_reference = pytest.mark.skipif(not US_REFERENCE.is_dir(),
                                     reason=f"reference data not found at {US_REFERENCE}")
TOLERANCE = 1e-3  # README: ~1e-4 is float32 rounding
BUILDERS = {"us_mobilenet_v1": us_mobilenet_v1, "us_mobilenet_v2": us_mobilenet_v2}
PLAIN = {"us_mobilenet_v1": mobilenet_v1, "us_mobilenet_v2": mobilenet_v2}


def tiny_batch(size=32):
    return np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")


def reference_file(version):
    return US_REFERENCE / f"us_mobilenet_v{version}_ref.npz"


@pytest.fixture(scope="module")
def us_models():
    return {name: builder() for name, builder in BUILDERS.items()}


def complexity_rows():
    path = US_REFERENCE / "us_mobilenet_complexity.tsv"
    if not path.is_file():
        return {}
    rows = {}
    with open(path) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rows.setdefault((row["model"], float(row["width"])), []).append(row)
    return rows


def calibrated_subnetwork(model, width):
    slimmable.calibrate_batch_norm(model, [tiny_batch()], width=width)
    return slimmable.subnetwork(model, width, resolution=32)


def structure(model):
    """Layer names (the size check's without the model name), types and weight shapes."""
    return [(layer.name.removeprefix("us_"), type(layer).__name__,
             [tuple(w.shape) for w in layer.weights]) for layer in model.layers]


# --- builders -------------------------------------------------------------------------------


def test_registered_and_keras_applications_arguments():
    assert {"us_mobilenet_v1", "us_mobilenet_v2", "mobilenet_v1", "mobilenet_v2"} <= set(
        models.list_models())
    features = models.get("mobilenet_v2", width=0.5, include_top=False, input_shape=(64, 64, 3))
    assert features.output_shape == (None, 2, 2, 1280)
    pooled = us_mobilenet_v1(include_top=False, pooling="max", input_shape=(64, 64, 3))
    assert pooled.output_shape == (None, 1024)
    probs = mobilenet_v1(width=0.25, classes=5)
    y = keras.ops.convert_to_numpy(probs(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3))))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="width must be a positive number, got -1"):
        mobilenet_v2(width=-1)


@pytest.mark.parametrize("name", ["us_mobilenet_v1", "us_mobilenet_v2"])
def test_built_at_the_largest_width_and_slimmed_by_the_width(us_models, name):
    model = us_models[name]
    assert slimmable.width_range(model) == ((0.25, 1.0) if name.endswith("1") else (0.35, 1.0))
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
    assert model.get_layer("stem_conv").kernel.shape == (3, 3, 3, 32)
    x = tiny_batch()
    slimmable.calibrate_batch_norm(model, [x], width=0.5)
    assert keras.ops.convert_to_numpy(model(x)).shape == (2, 1000)


# --- complexity: every row of the reference table --------------------------------------------


@needs_reference
@pytest.mark.parametrize("key", sorted(complexity_rows()), ids=lambda k: f"{k[0]}-{k[1]:g}")
def test_complexity_matches_the_official_table(us_models, key):
    name, width = key
    rows = complexity_rows()[key]
    sub = calibrated_subnetwork(us_models[name], width)
    params = {int(row["params"]) for row in rows}
    assert params == {profile.count_params(sub)}
    for row in rows:
        size = int(row["resolution"])
        assert profile.count_macs(sub, (size, size, 3)) == int(row["macs"]), size
    # The plain baseline at this width is that sub-network, layer for layer.
    plain = PLAIN[name](width=width)
    assert structure(plain) == structure(sub)
    assert profile.count_params(plain) == params.pop()
    assert profile.count_macs(plain, (224, 224, 3)) == int(
        next(row["macs"] for row in rows if row["resolution"] == "224"))


def make_divisible(v):
    """The official rounding, written again: nearest multiple of 8, +8 if that loses >10%."""
    rounded = max(1, int(v + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * v else rounded


def hand_counts(version, width, size, classes=1000):
    """(params, MACs) of US-MobileNetV`version` at `width` and `size`, from the README's rules."""
    c = lambda channels: make_divisible(channels * width)  # noqa: E731
    side = -(-size // 2)  # 3x3/2 with padding 1: ceil(size / 2)
    stem = c(32)
    params, macs = 27 * stem + 2 * stem, 27 * stem * side * side
    inputs = stem
    if version == 1:
        stages = [(1, 64, 1, 1), (1, 128, 2, 2), (1, 256, 2, 2), (1, 512, 6, 2), (1, 1024, 2, 2)]
    else:
        stages = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                  (6, 160, 3, 2), (6, 320, 1, 1)]
    for t, channels, repeats, strides in stages:
        for i in range(repeats):
            out = c(channels)
            expanded = t * inputs  # t * make_divisible(c_in * w): the ratio rule
            if t != 1:
                params += inputs * expanded + 2 * expanded
                macs += inputs * expanded * side * side
            if i == 0 and strides == 2:
                side = -(-side // 2)
            params += 9 * expanded + 2 * expanded + expanded * out + 2 * out
            macs += (9 * expanded + expanded * out) * side * side
            inputs = out
    if version == 2:
        params += inputs * 1280 + 2 * 1280
        macs += inputs * 1280 * side * side
        inputs = 1280
    return params + inputs * classes + classes, macs + inputs * classes


def test_a_width_off_the_table_follows_the_rule(us_models):
    assert hand_counts(1, 1.0, 224) == (4231976, 568740352)  # the counter itself, on the table
    assert hand_counts(2, 0.35, 128) == (1677128, 20220672)
    width, size = 0.45, 200
    for name, version in (("us_mobilenet_v1", 1), ("us_mobilenet_v2", 2)):
        sub = calibrated_subnetwork(us_models[name], width)
        counts = profile.count_params(sub), profile.count_macs(sub, (size, size, 3))
        assert counts == hand_counts(version, width, size), name
    # README: 24 channels at 0.45 expand to 6 * 16 = 96, not make_divisible(144 * 0.45) = 64.
    assert sub.get_layer("block2_project_conv").filters == 16
    assert sub.get_layer("block3_expand_conv").filters == 96
    assert sub.get_layer("head_conv").filters == 1280


# --- official weights and logits -------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    data = {}
    for version in (1, 2):
        with np.load(reference_file(version)) as npz:
            data[version] = {key: npz[key] for key in npz.files}
    return data


@pytest.fixture(scope="module")
def loaded():
    """Logit models with the reference weights, loaded through `weights=PATH` (.npz)."""
    kwargs = dict(include_preprocessing=False, classifier_activation=None)
    return {1: us_mobilenet_v1(weights=reference_file(1), **kwargs),
            2: us_mobilenet_v2(width_range=(0.7, 1.0), weights=reference_file(2), **kwargs)}


CONFIGS = [(1, "1_224"), (1, "0.5_160"), (2, "1_224"), (2, "0.7_160")]


@needs_reference
@pytest.mark.parametrize("version,config", CONFIGS, ids=lambda c: str(c))
def test_reproduces_the_official_logits(reference, loaded, version, config):
    data, model = reference[version], loaded[version]
    width = float(config.split("_")[0])
    slimmable.calibrate_batch_norm(model, list(data[f"calib/{config}"]), width=width)
    x, expected = data[f"test/{config}"], data[f"logits/{config}"]
    errors = [float(np.abs(keras.ops.convert_to_numpy(m(x, training=False)) - expected).max())
              for m in (model, slimmable.subnetwork(model, width))]
    print(f"V{version} {config}: max abs logit differences (model, subnetwork) {errors}")
    assert max(errors) <= TOLERANCE, errors


def official_shapes(version):
    lines = (US_REFERENCE / f"us_mobilenet_v{version}_state_dict.tsv").read_text().splitlines()
    return {key: tuple(int(d) for d in re.findall(r"\d+", shape))
            for key, shape in (line.split("\t") for line in lines[1:])}


@needs_reference
@pytest.mark.parametrize("version", [1, 2])
def test_every_official_key_has_its_variable(reference, loaded, version):
    targets = convert.official_targets(loaded[version])
    assert {k: t.torch_shape for k, t in targets.items()} == official_shapes(version)
    plain = (mobilenet_v1 if version == 1 else mobilenet_v2)(classifier_activation=None)
    convert.load_official_weights(plain, reference[version])  # width 1.0 takes them too
    for layer in (layer for layer in plain.layers if layer.weights):
        for ours, theirs in zip(layer.weights, loaded[version].get_layer(layer.name).weights):
            if not re.search("moving_", ours.path):
                np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours),
                                              keras.ops.convert_to_numpy(theirs))


@needs_reference
def test_pytorch_checkpoint_with_prefixes_and_statistics(reference, loaded, tmp_path):
    """A `.pth` training checkpoint: weights under "model", "module." prefixes, USBatchNorm2d's
    per-width `bn.N.running_*` and `num_batches_tracked` (all ignored)."""
    state = {f"module.{key[len('state/'):]}": torch.from_numpy(value.astype(np.float32))
             for key, value in reference[1].items() if key.startswith("state/")}
    for key in [k for k in state if k.endswith("body.1.weight")]:
        prefix = key[:-len("weight")]
        state[f"{prefix}bn.0.running_mean"] = torch.zeros(7)
        state[f"{prefix}bn.0.running_var"] = torch.ones(7)
        state[f"{prefix}bn.0.num_batches_tracked"] = torch.tensor(3)
    path = tmp_path / "mutualnet_v1.pth"
    torch.save({"epoch": 250, "model": state}, path)
    model = us_mobilenet_v1(weights=path, include_preprocessing=False)
    for ours, theirs in zip(model.trainable_weights, loaded[1].trainable_weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours),
                                      keras.ops.convert_to_numpy(theirs))
    features = us_mobilenet_v1(include_top=False, pooling="avg")
    convert.load_official_weights(features, path)  # all but classifier.0


@needs_reference
def test_mismatches_are_reported_together_and_nothing_is_loaded(reference):
    state = {k[len("state/"):]: v for k, v in reference[2].items() if k.startswith("state/")}
    del state["features.3.body.4.weight"]
    state["features.19.0.weight"] = np.zeros((3, 3, 1, 1), np.float16)
    state["classifier.0.weight"] = np.zeros((10, 1280), np.float16)
    model = us_mobilenet_v2()
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    with pytest.raises(ValueError) as error:
        convert.load_official_weights(model, state)
    message = str(error.value)
    assert re.search(r"missing keys[^\n]*\(1\):\n  features\.3\.body\.4\.weight\n", message)
    assert re.search(r"unexpected keys[^\n]*\(1\):\n  features\.19\.0\.weight\n", message)
    assert "classifier.0.weight: expected (1000, 1280), got (10, 1280)" in message
    assert "width_range" in message
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))
