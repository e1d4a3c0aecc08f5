import keras
import numpy as np
import pytest
from harness import check_save_load

from bl_keras import models


def test_registry():
    names = models.list_models()
    for name in ("bl_resnet50", "bl_seresnext101_32x4d", "resnet50", "bl_resnet56_cifar",
                 "resnet20_cifar"):
        assert name in names
    assert models.get("resnet20_cifar", classes=3).output_shape == (None, 3)
    with pytest.raises(ValueError, match="'nope'"):
        models.get("nope")


@pytest.mark.parametrize("size", [32, 33, 47, 64, 75])
def test_any_input_size_at_least_32(size):
    model = models.bl_resnet50(input_shape=(None, None, 3), classes=5)
    y = model(np.zeros((1, size, size + 2, 3), "float32"))
    assert y.shape == (1, 5)


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match=r"input_shape=\(31, 64, 3\)"):
        models.bl_resnet50(input_shape=(31, 64, 3))
    model = models.bl_resnet50(classes=5)
    with pytest.raises(ValueError, match="got 16x40"):
        model(np.zeros((1, 16, 40, 3), "float32"))


@pytest.mark.parametrize("bad", [dict(alpha=0), dict(beta=-1), dict(alpha=1.5), dict(beta="4")])
def test_alpha_beta_must_be_positive_integers(bad):
    arg, value = next(iter(bad.items()))
    with pytest.raises(ValueError, match=f"{arg} must be a positive integer, got {value!r}"):
        models.bl_resnet50(**bad)


def test_keras_applications_arguments():
    features = models.bl_resnet50(include_top=False, input_shape=(64, 64, 3))
    assert features.output_shape == (None, 2, 2, 2048)
    pooled = models.bl_resnet50(include_top=False, pooling="avg", input_shape=(64, 64, 3))
    assert pooled.output_shape == (None, 2048)
    logits = models.resnet20_cifar(classifier_activation=None, classes=4)
    y = keras.ops.convert_to_numpy(logits(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3))))
    assert not np.allclose(y.sum(axis=1), 1.0)
    probs = models.resnet20_cifar(classes=4)
    y = keras.ops.convert_to_numpy(probs(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3))))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="'sum'"):
        models.resnet20_cifar(include_top=False, pooling="sum")


def test_preprocessing_inside_the_model():
    raw = models.resnet20_cifar(classes=3)
    normalised = models.resnet20_cifar(classes=3, include_preprocessing=False)
    normalised.set_weights(raw.get_weights())
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(raw(pixels)),
        keras.ops.convert_to_numpy(normalised(((pixels - mean) / std).astype("float32"))),
        atol=1e-5,
    )


@pytest.mark.parametrize("name", ["bl_resnet20_cifar", "bl_resnext50_32x4d"])
def test_save_load_round_trip(name, tmp_path):
    kwargs = {"input_shape": (64, 64, 3), "classes": 7} if "cifar" not in name else {}
    model = models.get(name, **kwargs)
    x = np.random.default_rng(0).uniform(0, 255, (2, *model.input_shape[1:])).astype("float32")
    check_save_load(model, x, tmp_path)


def test_weights_argument_takes_keras_weight_files(tmp_path):
    source = models.bl_resnet20_cifar(classes=3)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    source.save_weights(tmp_path / "w.weights.h5")
    source.save(tmp_path / "m.keras")
    expected = keras.ops.convert_to_numpy(source(x))
    for path in (tmp_path / "w.weights.h5", tmp_path / "m.keras"):
        loaded = models.bl_resnet20_cifar(classes=3, weights=str(path))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), expected)


def test_export_saved_model_round_trip(tmp_path):
    import tensorflow as tf

    model = models.bl_resnet20_cifar(classes=4)
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    model.export(str(tmp_path / "sm"), format="tf_saved_model")
    restored = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_allclose(
        restored.serve(x).numpy(), keras.ops.convert_to_numpy(model(x)), atol=1e-5
    )


@pytest.mark.parametrize("name", ["bl_resnet20_cifar", "resnet20_cifar"])
def test_jit_compiled_fit_lowers_loss(name):
    keras.utils.set_random_seed(0)
    model = models.get(name, classes=4)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 4, 16)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        jit_compile=True,
    )
    assert model.jit_compile
    history = model.fit(x, y, batch_size=16, epochs=30, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("merge,upsample", [("concat", "nearest"), ("add", "bilinear")])
def test_merge_and_upsample_options(merge, upsample):
    model = models.bl_resnet20_cifar(merge=merge, upsample=upsample, classes=3)
    assert model(np.zeros((1, 32, 32, 3), "float32")).shape == (1, 3)
