"""bl_keras on the JAX backend: cross-backend files, jitted training, tf.data input, and the
backend-agnostic core without TensorFlow.

A backend is chosen once per process: `make test` runs this file from tests/test_backends.py in
a `KERAS_BACKEND=jax` subprocess; alone, `KERAS_BACKEND=jax python -m pytest tests/on_jax`.
"""

import os
import subprocess
import sys

import keras
import pytest

if keras.backend.backend() != "jax":
    pytest.skip("JAX-backend tests (run by tests/test_backends.py)", allow_module_level=True)

import backend_models  # noqa: E402
import numpy as np  # noqa: E402

import bl_keras  # noqa: E402, F401  (registers the custom objects)
import pipelines  # noqa: E402
from bl_keras import models  # noqa: E402
from bl_keras.training import optim  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def tensorflow_files(tmp_path_factory):
    """Directory of models saved under TensorFlow: BL_KERAS_FROM_TF, or made now."""
    directory = os.environ.get("BL_KERAS_FROM_TF")
    if not directory:
        directory = str(tmp_path_factory.mktemp("from_tensorflow"))
        env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=ROOT)
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "backend_models.py"),
                        directory], check=True, env=env)
    return directory


def test_backend_is_jax():
    assert keras.backend.backend() == "jax"


def test_tensorflow_files_load_and_agree(tensorflow_files):
    """Same weights, same outputs (1e-4) and the same MAC count as under TensorFlow; the
    models are saved again under JAX (BL_KERAS_TO_TF) for tests/test_backends.py to load
    under TensorFlow."""
    backend_models.check_all(tensorflow_files, resave=os.environ.get("BL_KERAS_TO_TF"))


@pytest.fixture(scope="module")
def digits_model():
    keras.utils.set_random_seed(0)
    model = models.bl_resnet20_cifar(classes=10)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=optim.SmoothedSparseCrossentropy(0.1), metrics=["accuracy"],
                  jit_compile=True)
    return model


def _digits(split, training):
    return pipelines.get_dataset("digits", split, 32, 32, training=training)


def test_jitted_fit_lowers_loss_on_fixed_batch(digits_model):
    x, y = (np.asarray(t) for t in next(iter(_digits("train", False))))
    history = digits_model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.9 * losses[0], losses  # 2.43 -> 2.09 when measured


def test_fit_on_pipelines_tf_data(digits_model):
    """`fit` reads our tf.data pipelines under JAX (the same compiled step as above)."""
    history = digits_model.fit(_digits("train", True), epochs=2, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0], history.history
    _, accuracy = digits_model.evaluate(_digits("test", False), verbose=0)
    assert accuracy > 0.5, accuracy  # chance is 0.1


def test_core_without_tensorflow():
    """`import bl_keras`, models, profile, multires and slimmable with TensorFlow absent;
    the TensorFlow parts say that they need it."""
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__),
                                                          "without_tensorflow.py")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "all checks passed" in result.stdout
