"""One small model of every family, saved under one Keras backend and checked under another.

`save_all(directory)` builds each case with perturbed BatchNorm statistics, scales and mixing
logits (fresh ones would make BatchNorm an identity and the zero-gamma residual branches
vanish, hiding a backend's mistakes there), saves `<case>.keras`, its inputs and outputs
(`<case>.npz`) and its MAC count (`macs.json`). `check_all(directory)` loads every file under the
running backend and compares (and can save the loaded models back for the reverse check).
Used by tests/test_backends.py (TensorFlow side) and tests/on_jax/ (JAX side);
`python tests/backend_models.py DIR` saves under the backend that KERAS_BACKEND names.
"""

import json
import os
import sys

import keras
import numpy as np

from bl_keras import models, profile, slimmable

TOLERANCE = 1e-4  # absolute and relative, on logits
SLIM_WIDTH = 0.5

# case -> (builder, input shape). Logits out (no softmax), so a difference cannot saturate away.
CASES = {
    # ResNet/ResNeXt/SE family: the SE-ResNeXt Big-Little model has every piece of it.
    "bl_seresnext50_32x4d": (
        lambda: models.bl_seresnext50_32x4d(classes=10, classifier_activation=None),
        (64, 64, 3)),
    "bl_shufflenet_v2": (
        lambda: models.bl_shufflenet_v2(width_multiplier=0.5, classes=10,
                                        classifier_activation=None),
        (64, 64, 3)),
    "bl_resnet20_cifar": (
        lambda: models.bl_resnet20_cifar(classes=10, classifier_activation=None), (32, 32, 3)),
    "bl_resnet22_speech": (
        lambda: models.bl_resnet22_speech(alpha=2, beta=3, classes=4, width_multiplier=1 / 16,
                                          classifier_activation=None),
        (64, 56, 3)),
    "multires_cifar": (
        lambda: models.multires_cifar(4, 8, levels=3, input_shape=(16, 16, 3), classes=3,
                                      learn_depth=True),
        (16, 16, 3)),
    "us_resnet20_cifar": (
        lambda: models.us_resnet20_cifar(classes=10, classifier_activation=None), (32, 32, 3)),
}


def perturb(model, seed=0):
    """Random BatchNorm statistics, scales and offsets and random mixing logits."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        name = variable.path.split("/")[-1]
        shape = tuple(variable.shape)
        if "variance" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "mean" in name:
            value = rng.normal(0.0, 0.1, shape)
        elif name == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif name in ("beta", "bias"):
            value = rng.normal(0.0, 0.1, shape)
        elif name in ("mixing_logits", "beta_logits"):
            value = rng.normal(0.0, 1.0, shape)
        else:
            continue
        variable.assign(value.astype(variable.dtype))


def inputs(case, seed=1):
    shape = CASES[case][1]
    return np.random.default_rng(seed).uniform(0, 255, (2, *shape)).astype("float32")


def outputs(model, case, x):
    """{key: array}: the model's outputs, and for the slimmable case also at SLIM_WIDTH."""
    result = {"y": model.predict_on_batch(x)}  # compiled: JAX's eager ops are slow to compile
    if case == "us_resnet20_cifar":
        slimmable.set_width(model, SLIM_WIDTH)
        result["y_slim"] = model.predict_on_batch(x)
        slimmable.set_width(model, 1.0)
    return result


def save_all(directory):
    os.makedirs(directory, exist_ok=True)
    macs = {}
    for case, (build, _) in CASES.items():
        keras.utils.set_random_seed(0)
        model = build()
        perturb(model)
        x = inputs(case)
        if case == "us_resnet20_cifar":
            for width in (SLIM_WIDTH, 1.0):  # statistics of both widths, from these images
                slimmable.calibrate_batch_norm(model, [x], width=width)
        model.save(os.path.join(directory, f"{case}.keras"))
        np.savez(os.path.join(directory, f"{case}.npz"), x=x, **outputs(model, case, x))
        macs[case] = profile.count_macs(model, CASES[case][1])
    with open(os.path.join(directory, "macs.json"), "w") as f:
        json.dump({"backend": keras.backend.backend(), "macs": macs}, f)


def check_all(directory, resave=None):
    """Asserts that every saved case loads and gives the saved outputs and MACs here; with
    `resave`, saves each loaded model again there with the outputs of this backend (so the
    other backend can check the way back without this one building the models afresh)."""
    with open(os.path.join(directory, "macs.json")) as f:
        saved = json.load(f)
    assert saved["backend"] != keras.backend.backend(), "a cross-backend check on one backend"
    assert set(saved["macs"]) == set(CASES)
    for case in CASES:
        model = keras.models.load_model(os.path.join(directory, f"{case}.keras"))
        expected = np.load(os.path.join(directory, f"{case}.npz"))
        got = outputs(model, case, expected["x"])
        for key, value in got.items():
            np.testing.assert_allclose(value, expected[key], rtol=TOLERANCE, atol=TOLERANCE,
                                       err_msg=f"{case} {key}: {saved['backend']} -> "
                                               f"{keras.backend.backend()}")
        assert profile.count_macs(model, CASES[case][1]) == saved["macs"][case], case
        if resave:
            os.makedirs(resave, exist_ok=True)
            model.save(os.path.join(resave, f"{case}.keras"))
            np.savez(os.path.join(resave, f"{case}.npz"), x=expected["x"], **got)
    if resave:
        with open(os.path.join(resave, "macs.json"), "w") as f:
            json.dump({"backend": keras.backend.backend(), "macs": saved["macs"]}, f)


if __name__ == "__main__":
    import bl_keras  # noqa: F401  (registers the custom objects)

    save_all(sys.argv[1])
