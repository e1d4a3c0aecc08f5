"""Run with KERAS_BACKEND=jax: the backend-agnostic core works with TensorFlow unimportable."""

import importlib
import importlib.abc
import sys


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "tf_keras"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


sys.meta_path.insert(0, _NoTensorFlow())

import keras  # noqa: E402
import numpy as np  # noqa: E402

import bl_keras  # noqa: E402, F401
from bl_keras import layers, models, multires, profile, slimmable  # noqa: E402, F401

assert keras.backend.backend() == "jax"

# MAC and parameter counts (TensorFlow's, tests/test_slimmable_cifar.py).
model = models.bl_resnet20_cifar()
assert profile.count_macs(model) == 27_247_232, profile.count_macs(model)
assert profile.count_params(model) == 279_786

# Multi-resolution: run, read the mixing weights, prune to one level per layer.
keras.utils.set_random_seed(0)
model = models.multires_cifar(4, 8, levels=3, input_shape=(16, 16, 3), classes=3)
x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
assert multires.mixing_weights(model).shape == (4, 3)
plain = multires.prune(model, keep_best=True)
assert not multires.multires_layers(plain)
assert plain(x).shape == (2, 3)
assert profile.count_macs(plain) < profile.count_macs(model)

# Slimmable: set_width, calibrate, subnetwork, all at once equal.
model = models.us_resnet20_cifar(classes=10)
x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
slimmable.set_width(model, 0.5)
slimmable.calibrate_batch_norm(model, [x])
slim = keras.ops.convert_to_numpy(model(x, training=False))
sub = slimmable.subnetwork(model, 0.5)
np.testing.assert_allclose(keras.ops.convert_to_numpy(sub(x, training=False)), slim, atol=1e-5)
assert profile.count_macs(sub) < profile.count_macs(models.us_resnet20_cifar(classes=10))

# The TensorFlow parts say so.
for module in ("pipelines", "bl_keras.export", "bl_keras.training.methods",
               "bl_keras.training.distributed"):
    try:
        importlib.import_module(module)
    except ImportError as error:
        assert "needs TensorFlow" in str(error), error
    else:
        raise AssertionError(f"{module} imported without TensorFlow")

assert "tensorflow" not in sys.modules
print("all checks passed")
