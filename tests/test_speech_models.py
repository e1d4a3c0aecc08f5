"""Speech acoustic models (paper section 4.2, Table 3, Appendix B, Table 12)."""

import keras
import numpy as np
import pytest
from harness import check_save_load

from bl_keras import models, profile
from bl_keras.models import speech

TINY = 1 / 16  # widths 4, 8, 16, 32: little branches of alpha=4 have 1, 2, 4, 8 channels
# bL-PYR with alpha=4 needs 256 * w // 4**3 >= 1: stage-1 branches 1, 4, 16, 64 channels.
PYR_TINY = 1 / 4
VARIANTS = [
    ("baseline", {}),
    ("a4b1", dict(alpha=4, beta=1)),
    ("a4b2", dict(alpha=4, beta=2)),
    ("a4b3", dict(alpha=4, beta=3)),
    ("a2b3", dict(alpha=2, beta=3)),
    ("a4b1cat", dict(alpha=4, beta=1, merge="concat")),
    ("pyr", dict(alpha=4, beta=1)),
]
# Table 3: (FLOPs 1e9, params 1e6) of lines 1-7.
TABLE3 = {
    "baseline": (1.11, 3.02),
    "a4b1": (0.68, 3.15),
    "a4b2": (0.66, 3.11),
    "a4b3": (0.65, 3.10),
    "a2b3": (0.77, 3.07),
    "a4b1cat": (0.70, 3.18),
    "pyr": (0.98, 3.32),
}
OUTPUT_CLASSES = 32000


def build(name, kwargs, **extra):
    if name == "baseline":
        return speech.resnet22_speech(**kwargs, **extra)
    if name == "pyr":
        return speech.bl_pyr_resnet22_speech(**kwargs, **extra)
    return speech.bl_resnet22_speech(**kwargs, **extra)


def tiny(name):
    return PYR_TINY if name == "pyr" else TINY


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
    model = build(name, kwargs, classes=5, width_multiplier=tiny(name))
    assert model.output_shape == (None, None, 5)
    assert model(features(2, 49)).shape == (2, 1, 5)
    assert model(features(2, 60)).shape == (2, 12, 5)
    fixed = build(name, kwargs, classes=5, width_multiplier=tiny(name), input_shape=(64, 49, 3))
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


@pytest.mark.parametrize(
    "name,kwargs",
    [VARIANTS[0], VARIANTS[2], VARIANTS[4], VARIANTS[5], VARIANTS[6],
     ("pyr", dict(alpha=4, beta=2))],
)
def test_long_input_equals_sliding_windows(name, kwargs):
    model = randomize(build(name, kwargs, classes=7, width_multiplier=tiny(name),
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


def _complexity(name, kwargs):
    """MACs and params at 64x49 with the 32k output layer added analytically (built with one
    class to keep the test fast: the output 1x1 conv is 512 x classes MACs + bias params)."""
    model = build(name, kwargs, classes=1, classifier_activation=None)
    macs = profile.count_macs(model, (64, 49, 3))
    params = profile.count_params(model)
    out_macs = 512 * (OUTPUT_CLASSES - 1)
    out_params = (512 + 1) * (OUTPUT_CLASSES - 1)
    return macs - 512, macs + out_macs, params - 513, params + out_params


def test_complexity_matches_table3():
    rows = {name: _complexity(name, kwargs) for name, kwargs in VARIANTS}
    base = rows["baseline"]
    print("\nTable 3 line, model: paper GFLOPs (x) | ours GMACs w/o 32k out (x) | "
          "with 32k out (x) | paper Mparams | ours w/o | with")
    for line, (name, (macs_wo, macs_w, params_wo, params_w)) in enumerate(rows.items(), 1):
        flops, params = TABLE3[name]
        print(f"{line} {name:9s} {flops:5.2f} ({TABLE3['baseline'][0] / flops:4.2f}x) | "
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
        if name != "pyr":
            assert abs(macs_w / 1e9 - TABLE3[name][0]) < 0.015, (name, macs_w)
    # bL-PYR (line 7) is underspecified; our reading (module docstring) gives 1.029 GMACs,
    # 1.07x against the paper's 0.98 (1.13x): 4.9% below the paper's ratio (4.8% without the
    # output layer), so the bound is 6%.
    pyr_ratio = base[1] / rows["pyr"][1]
    assert abs(pyr_ratio / 1.13 - 1) < 0.06, pyr_ratio
    assert abs(base[0] / rows["pyr"][0] / 1.13 - 1) < 0.06
    assert 1.02e9 < rows["pyr"][1] < 1.04e9
    # Four and three branches cost more than bL's two, less than the baseline.
    assert base[1] > rows["pyr"][1] > rows["a4b1cat"][1]
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
    assert {"resnet22_speech", "bl_resnet22_speech", "bl_pyr_resnet22_speech"} <= set(
        models.list_models())
    assert "bl_pyr_resnet22_speech" in models.__all__
    pyr = models.get("bl_pyr_resnet22_speech", classes=4, width_multiplier=PYR_TINY)
    assert pyr.name == "bl_pyr_resnet22_speech_a4_b1"
    model = models.get("bl_resnet22_speech", alpha=2, beta=3, classes=4, width_multiplier=TINY)
    assert model.output_shape == (None, None, 4)


@pytest.mark.parametrize("name,kwargs", [
    ("a4b2", dict(alpha=4, beta=2)),
    ("a4b1cat", dict(alpha=4, beta=1, merge="concat")),
    ("pyr", dict(alpha=4, beta=1)),
])
def test_save_load_round_trip(name, kwargs, tmp_path):
    model = randomize(build(name, kwargs, classes=5, width_multiplier=tiny(name)))
    check_save_load(model, features(2, 52), tmp_path)


def _out(model, layer):
    """(bins, frames, channels) of a layer's output."""
    return tuple(model.get_layer(layer).output.shape[1:])


def _convs(model, prefix):
    """Strides and kernel sizes of the 3x3 convs (not shortcuts) whose names start with prefix."""
    return [
        (layer.strides[0], layer.kernel.shape[-2], layer.filters) for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D) and layer.name.startswith(prefix)
        and layer.kernel_size == (3, 3)
    ]


def _shortcut_stride(model, conv_name):
    """The stride of a 1x1 shortcut conv, its subsampling step included (strided 1x1 convs are
    a 1x1 pooling step then a stride-1 conv: see `speech._conv`)."""
    stride = model.get_layer(conv_name).strides
    names = {layer.name for layer in model.layers}
    if f"{conv_name}_subsample" in names:
        sub = model.get_layer(f"{conv_name}_subsample").strides
        stride = (stride[0] * sub[0], stride[1] * sub[1])
    return tuple(stride)


def test_strided_1x1_convs_train_at_small_widths():
    """A strided 1x1 shortcut is subsampling + a stride-1 conv: training a width-1/8 model
    (8-channel shortcuts with strides (2, 1), whose oneDNN backward pass crashes) runs."""
    model = speech.bl_resnet22_speech(alpha=2, beta=3, width_multiplier=0.125, classes=3,
                                      input_shape=(64, 49, 3), pooling="avg")
    assert model.get_layer("stage1_big_block1_downsample_conv").strides == (1, 1)
    assert model.get_layer("stage1_big_block1_downsample_conv_subsample").strides == (2, 1)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((4, 64, 49, 3)).astype("float32")
    assert np.isfinite(model.train_on_batch(x, np.zeros(4, "int32")))


def test_pyramid_structure_at_full_size():
    """Table 3 line 7 as read in the module docstring: branch widths, bins, depths, strides."""
    model = speech.bl_pyr_resnet22_speech(classes=1, input_shape=(64, 49, 3))
    bl = speech.bl_resnet22_speech(alpha=4, beta=1, classes=1, input_shape=(64, 49, 3))
    stages = {
        # stage: {branch: (stride = 1 / resolution, width)}, merged at the big branch's width
        "stage1": {"little": (1, 4), "middle1": (2, 16), "middle2": (4, 64), "big": (8, 256)},
        "stage2": {"little": (1, 8), "middle1": (2, 32), "big": (4, 128)},
    }
    frames = {"stage1": (45, 35), "stage2": (33, 23)}
    for stage, branches in stages.items():
        stage_input = "stem_relu" if stage == "stage1" else "transition1_out"
        bins_in, frames_in = _out(model, stage_input)[:2]
        assert frames_in == frames[stage][0]
        merge_width = branches["big"][1]
        for branch, (stride, width) in branches.items():
            prefix = f"{stage}_{branch}"
            convs = _convs(model, f"{prefix}_block")
            # five 3x3 convs (blocks of 2, 2, 1), the first strided 2^j in frequency at once
            assert [c[0] for c in convs] == [stride, 1, 1, 1, 1], prefix
            assert {c[2] for c in convs} == {width}, prefix
            assert _shortcut_stride(model, f"{prefix}_block1_downsample_conv") == (stride, 1)
            assert _out(model, f"{prefix}_block3_add") == (bins_in // stride, frames[stage][1],
                                                           width), prefix
            names = {layer.name for layer in model.layers if layer.name.startswith(prefix)}
            # the big branch goes into the sum without a final ReLU, the others have one
            assert (f"{prefix}_block3_out" in names) == (branch != "big"), prefix
            # every branch but the big one: 1x1 conv + BN to the big width (no ReLU) ...
            assert (f"{prefix}_match_conv" in names) == (branch != "big"), prefix
            assert f"{prefix}_match_relu" not in names
            if branch != "big":
                assert _out(model, f"{prefix}_match_bn") == (bins_in // stride,
                                                             frames[stage][1], merge_width)
            # ... then bilinear upsampling x2^j in frequency for the lower resolutions
            if stride > 1:
                upsample = model.get_layer(f"{prefix}_upsample")
                assert upsample.factor == stride
                assert _out(model, f"{prefix}_upsample") == (bins_in, frames[stage][1],
                                                             merge_width)
            else:
                assert f"{prefix}_upsample" not in names
        assert len(model.get_layer(f"{stage}_merge").input) == len(branches)
        assert _out(model, f"{stage}_out") == (bins_in, frames[stage][1], merge_width)
    # Transitions of Table 12; the first one projects the 256 channels of stage 1 to 64.
    assert _out(model, "transition1_out") == (16, 33, 64)
    assert model.get_layer("transition1_downsample_conv").kernel.shape == (1, 1, 256, 64)
    assert _out(model, "transition2_out") == (8, 21, 128)
    assert _out(model, "transition3_out") == (4, 9, 256)
    # Stage 3 is bL-ResNet-22 (alpha=4, beta=1)'s, stage 4 the plain ResNet-22 stage.
    def stage3(m):
        return [(layer.name, type(layer).__name__, tuple(layer.output.shape),
                 [tuple(w.shape) for w in layer.weights])
                for layer in m.layers if layer.name.startswith("stage3_")]
    assert stage3(model) == stage3(bl)
    assert not any(layer.name.startswith("stage4_little") for layer in model.layers)
    assert _convs(model, "stage4_") == [(1, 256, 512)] + [(1, 512, 512)] * 3
    assert _out(model, "stage4_block2_out") == (4, 1, 512)


def test_pyramid_beta_shortens_the_high_resolution_branches():
    model = speech.bl_pyr_resnet22_speech(alpha=4, beta=2, classes=3, width_multiplier=PYR_TINY,
                                          input_shape=(64, 49, 3))
    # branch j has little_conv_counts(5, beta^(K-1-j)) convs, the big one (2, 2, 1).
    depths = {"stage1_little": 1, "stage1_middle1": 2, "stage1_middle2": 3, "stage1_big": 5,
              "stage2_little": 2, "stage2_middle1": 3, "stage2_big": 5,
              "stage3_little": 3, "stage3_big": 5}
    for prefix, depth in depths.items():
        assert len(_convs(model, f"{prefix}_block")) == depth, prefix
    assert speech.little_conv_counts(5, 8) == (1,)
    # shallower branches are cropped in time to the big branch before the sum
    for stage, frames in (("stage1", 35), ("stage2", 23), ("stage3", 11)):
        for layer in model.get_layer(f"{stage}_merge").input:
            assert layer.shape[2] == frames
    assert _out(model, "stage1_little_crop")[1] == 35
    assert model(features(1, 49)).shape == (1, 1, 3)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(width_multiplier=TINY), r"stage 1 .*use width_multiplier >= 0.25"),
        (dict(alpha=2, width_multiplier=1 / 64), r"stage 1 .*use width_multiplier >= 0.03125"),
        (dict(alpha=0), "alpha must be a positive integer, got 0"),
        (dict(beta=1.5), "beta must be a positive integer, got 1.5"),
        (dict(pooling="max"), "'max'"),
        (dict(input_shape=(64, 40, 3)), "at least 49 frames"),
    ],
)
def test_pyramid_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        speech.bl_pyr_resnet22_speech(**{"classes": 3, **kwargs})


def test_pyramid_alpha_2_tiny_model_runs():
    model = speech.bl_pyr_resnet22_speech(alpha=2, classes=3, width_multiplier=TINY)
    assert speech.pyramid_branch_widths(2, TINY) == ((2, 4, 8, 16), (2, 4, 8))
    assert model(features(1, 50)).shape == (1, 2, 3)


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("bins", [4, 8, 16])
def test_frequency_upsample_matches_pytorch_bilinear(factor, bins):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(factor * bins).normal(size=(2, bins, 5, 3)).astype("float32")
    ours = keras.ops.convert_to_numpy(speech.FrequencyUpsample(factor)(x))
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x).permute(0, 3, 1, 2), scale_factor=(factor, 1), mode="bilinear",
        align_corners=False,
    ).permute(0, 2, 3, 1).numpy()
    assert ours.shape == (2, bins * factor, 5, 3)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    # rows sum to 1: a 1x1 conv + BN (affine) commutes with the upsampling
    np.testing.assert_allclose(speech._bilinear_matrix(bins, bins * factor).sum(1), 1, atol=1e-6)


@pytest.mark.parametrize("name,kwargs", [("a4b3", dict(alpha=4, beta=3)),
                                         ("a2b3", dict(alpha=2, beta=3)),
                                         ("pyr", dict(alpha=4, beta=2))])
def test_time_crops_take_the_centre(name, kwargs):
    """Shallower branches (and shortcuts) are cropped in time to the deepest branch centrally.
    With every kernel symmetric in time the network then commutes with reversing time: the
    per-frame outputs of a reversed input are the reversed outputs. A one-sided crop shifts one
    branch against the other and breaks this."""
    model = randomize(build(name, kwargs, classes=4, width_multiplier=tiny(name),
                            classifier_activation=None), seed=2)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.kernel.shape[1] > 1:
            kernel = layer.kernel.numpy()
            layer.kernel.assign((kernel + kernel[:, ::-1]) / 2)
    x = features(1, 70)
    out = model(x, training=False).numpy()
    reversed_out = model(x[:, :, ::-1], training=False).numpy()
    assert out.shape == (1, 22, 4) and np.abs(out).max() > 1e-3
    np.testing.assert_allclose(reversed_out, out[:, ::-1], rtol=1e-4,
                               atol=1e-4 * np.abs(out).max())
