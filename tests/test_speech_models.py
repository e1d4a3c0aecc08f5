"""Speech acoustic models (paper section 4.2, Table 3, Appendix B, Table 12)."""

import keras
import numpy as np
import pytest
from harness import check_save_load

from bl_keras import models, profile
from bl_keras.models import speech

TINY = 1 / 16  # widths 4, 8, 16, 32: little branches of alpha=4 have 1, 2, 4, 8 channels
VARIANTS = [
    ("baseline", {}),
    ("a4b1", dict(alpha=4, beta=1)),
    ("a4b2", dict(alpha=4, beta=2)),
    ("a4b3", dict(alpha=4, beta=3)),
    ("a2b3", dict(alpha=2, beta=3)),
    ("a4b1cat", dict(alpha=4, beta=1, merge="concat")),
]
# Table 3: (FLOPs 1e9, params 1e6) of lines 1-6.
TABLE3 = {
    "baseline": (1.11, 3.02),
    "a4b1": (0.68, 3.15),
    "a4b2": (0.66, 3.11),
    "a4b3": (0.65, 3.10),
    "a2b3": (0.77, 3.07),
    "a4b1cat": (0.70, 3.18),
}
OUTPUT_CLASSES = 32000


def build(kwargs, **extra):
    if not kwargs:
        return speech.resnet22_speech(**extra)
    return speech.bl_resnet22_speech(**kwargs, **extra)


def randomize(model, seed=0):
    """Random weights everywhere (BN variances positive) so no branch is trivially zero."""
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.weights:
        value = rng.normal(scale=0.3, size=w.shape).astype("float32")
        if "variance" in w.path:
            value = np.abs(value) + 0.5
        weights.append(value)
    model.set_weights(weights)
    return model


def features(batch, frames, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, 64, frames, 3)).astype("float32")


@pytest.mark.parametrize("name,kwargs", VARIANTS)
def test_output_shapes(name, kwargs):
    model = build(kwargs, classes=5, width_multiplier=TINY)
    assert model.output_shape == (None, None, 5)
    assert model(features(2, 49)).shape == (2, 1, 5)
    assert model(features(2, 60)).shape == (2, 12, 5)
    fixed = build(kwargs, classes=5, width_multiplier=TINY, input_shape=(64, 49, 3))
    assert fixed.output_shape == (None, 1, 5)


def test_time_axis_follows_table12():
    model = speech.bl_resnet22_speech(classes=3, width_multiplier=TINY, input_shape=(64, 49, 3))
    expected = {
        "stem_relu": (32, 45), "stage1_out": (32, 35), "transition1_out": (16, 33),
        "stage2_out": (16, 23), "transition2_out": (8, 21), "stage3_out": (8, 11),
        "transition3_out": (4, 9), "stage4_out": (4, 1), "projection_relu": (1, 1),
    }
    for layer, (freq, frames) in expected.items():
        assert tuple(model.get_layer(layer).output.shape[1:3]) == (freq, frames), layer


def test_little_branch_depth_is_ceil_l_over_beta():
    assert speech.little_conv_counts(5, 1) == (2, 2, 1)
    assert speech.little_conv_counts(5, 2) == (2, 1)
    assert speech.little_conv_counts(5, 3) == (2,)
    assert speech.little_conv_counts(4, 2) == (2,)
    assert speech.little_conv_counts(4, 3) == (2,)
    # (alpha=2, beta=3) has no branching in the last stage; the others do.
    assert not any("stage4_little" in layer.name for layer in speech.bl_resnet22_speech(
        alpha=2, beta=3, classes=2, width_multiplier=TINY).layers)
    assert any("stage4_little" in layer.name for layer in speech.bl_resnet22_speech(
        alpha=4, beta=3, classes=2, width_multiplier=TINY).layers)


@pytest.mark.parametrize("name,kwargs", [VARIANTS[0], VARIANTS[2], VARIANTS[4], VARIANTS[5]])
def test_long_input_equals_sliding_windows(name, kwargs):
    model = randomize(build(kwargs, classes=7, width_multiplier=TINY,
                            classifier_activation=None))
    x = features(2, 60)
    long = keras.ops.convert_to_numpy(model(x, training=False))
    windows = np.concatenate(
        [keras.ops.convert_to_numpy(model(x[:, :, t:t + 49], training=False))
         for t in range(60 - 48)],
        axis=1,
    )
    assert long.shape == windows.shape == (2, 12, 7)
    assert np.abs(long).max() > 1e-3
    np.testing.assert_allclose(long, windows, rtol=1e-4, atol=1e-4 * np.abs(long).max())


def test_utterance_pooling_averages_frame_logits():
    frames = randomize(speech.bl_resnet22_speech(
        alpha=4, beta=2, classes=6, width_multiplier=TINY, classifier_activation=None))
    pooled = speech.bl_resnet22_speech(
        alpha=4, beta=2, classes=6, width_multiplier=TINY, pooling="avg")
    pooled.set_weights(frames.get_weights())
    assert pooled.output_shape == (None, 6)
    for length in (49, 60, 75):
        x = features(2, length)
        logits = keras.ops.convert_to_numpy(frames(x, training=False))
        probs = keras.ops.convert_to_numpy(pooled(x, training=False))
        assert probs.shape == (2, 6)
        expected = keras.ops.convert_to_numpy(keras.ops.softmax(logits.mean(axis=1)))
        np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)


def _complexity(kwargs):
    """MACs and params at 64x49 with the 32k output layer added analytically (built with one
    class to keep the test fast: the output 1x1 conv is 512 x classes MACs + bias params)."""
    model = build(kwargs, classes=1, classifier_activation=None)
    macs = profile.count_macs(model, (64, 49, 3))
    params = profile.count_params(model)
    out_macs = 512 * (OUTPUT_CLASSES - 1)
    out_params = (512 + 1) * (OUTPUT_CLASSES - 1)
    return macs - 512, macs + out_macs, params - 513, params + out_params


def test_complexity_matches_table3():
    rows = {name: _complexity(kwargs) for name, kwargs in VARIANTS}
    base = rows["baseline"]
    print("\nmodel     paper GFLOPs (x) | ours GMACs w/o 32k out (x) | with 32k out (x) | "
          "paper Mparams | ours w/o | with")
    for name, (macs_wo, macs_w, params_wo, params_w) in rows.items():
        flops, params = TABLE3[name]
        print(f"{name:9s} {flops:5.2f} ({TABLE3['baseline'][0] / flops:4.2f}x) | "
              f"{macs_wo / 1e9:5.3f} ({base[0] / macs_wo:4.2f}x) | "
              f"{macs_w / 1e9:5.3f} ({base[1] / macs_w:4.2f}x) | {params:5.2f} | "
              f"{params_wo / 1e6:6.2f} | {params_w / 1e6:6.2f}")
    paper_ratio = {"a4b1": 1.63, "a4b2": 1.68, "a4b3": 1.70, "a2b3": 1.43, "a4b1cat": 1.58}
    for name, ratio in paper_ratio.items():
        ours = base[1] / rows[name][1]
        assert abs(ours / ratio - 1) < 0.05, (name, ours, ratio)
        assert abs(base[0] / rows[name][0] / ratio - 1) < 0.05, name
    # The paper's FLOPs are MACs with the 32k output layer: within rounding of Table 3.
    for name, (_, macs_w, _, _) in rows.items():
        assert abs(macs_w / 1e9 - TABLE3[name][0]) < 0.015, (name, macs_w)
    # concat costs more than add; larger beta costs less; alpha=2 costs more.
    assert rows["a4b1cat"][1] > rows["a4b1"][1] > rows["a4b2"][1] > rows["a4b3"][1]
    assert rows["a2b3"][1] > rows["a4b1"][1]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(alpha=0), "alpha must be a positive integer, got 0"),
        (dict(beta=-1), "beta must be a positive integer, got -1"),
        (dict(alpha=1.5), "alpha must be a positive integer, got 1.5"),
        (dict(beta="2"), "beta must be a positive integer, got '2'"),
        (dict(alpha=128), "alpha=128"),
        (dict(merge="max"), "'max'"),
        (dict(pooling="max"), "'max'"),
        (dict(input_shape=(64, 40, 3)), r"at least 49 frames, got input_shape=\(64, 40, 3\)"),
        (dict(input_shape=(80, None, 3)), "64 mel bins"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        speech.bl_resnet22_speech(**{"classes": 3, **kwargs})


def test_too_short_input_is_refused():
    with pytest.raises(ValueError, match="at least 49 frames"):
        speech.resnet22_speech(input_shape=(64, 48, 3), classes=3)
    model = speech.resnet22_speech(classes=3, width_multiplier=TINY)
    with pytest.raises(ValueError, match="at least 49 frames.*got 40"):
        model(features(1, 40))


def test_registry():
    assert "resnet22_speech" in models.list_models()
    model = models.get("bl_resnet22_speech", alpha=2, beta=3, classes=4, width_multiplier=TINY)
    assert model.output_shape == (None, None, 4)


@pytest.mark.parametrize("kwargs", [dict(alpha=4, beta=2), dict(alpha=4, beta=1, merge="concat")])
def test_save_load_round_trip(kwargs, tmp_path):
    model = randomize(speech.bl_resnet22_speech(**kwargs, classes=5, width_multiplier=TINY))
    check_save_load(model, features(2, 52), tmp_path)
