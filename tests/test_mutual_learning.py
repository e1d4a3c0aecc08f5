"""MutualNet's training step (seed 003): the sandwich rule's four sub-networks and their
summed gradients, inplace distillation, bounded compilation (one graph trace; one XLA
program per width and resolution), the kernels-only weight decay, the trainer and
`apps.train --mutual_learning` (fit, mirrored, the multi-worker custom loop)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import tiny_slimmable_model as tiny_model

import pipelines
from bl_keras import models, slimmable
from bl_keras.training import methods, trainer
from bl_keras.training.slimmable import MutualLearning

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
RESOLUTIONS = (16, 12)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def network(**kwargs):
    return models.get("us_resnet20_cifar", classes=10, input_shape=(None, None, 3),
                      classifier_activation=None, **kwargs)


def digits(batch_size=32, resolutions=RESOLUTIONS, seed=0):
    return pipelines.get_dataset("digits", "train", max(resolutions), batch_size, True,
                                 multi_resolution=resolutions, repeat=True, seed=seed)


def test_widths_and_resolutions_are_checked():
    assert slimmable.width_grid(0.25, 1.0, 0.25) == [0.25, 0.5, 0.75, 1.0]
    assert slimmable.width_grid(0.25, 1.0, 0.3) == [0.25, 0.55, 0.85, 1.0]
    assert slimmable.check_resolutions([12, 16]) == [12, 16]
    with pytest.raises(ValueError, match="at least one input size"):
        slimmable.check_resolutions([])
    with pytest.raises(ValueError, match=r"repeat \[16\]"):
        slimmable.check_resolutions([16, 12, 16])
    with pytest.raises(ValueError, match="positive integers"):
        slimmable.check_resolutions([16, 0])
    with pytest.raises(ValueError, match="at least one input size"):
        MutualLearning(resolutions=[])
    model = network()
    for width_range, match in [((0.1, 1.0), r"outside the range \[0.25, 1\]"),
                               ((0.25, 1.5), "outside the range")]:
        method = MutualLearning(width_range=width_range, resolutions=RESOLUTIONS)
        with pytest.raises(ValueError, match=match):
            method.build(model, keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="no slimmable layers"):
        MutualLearning().build(models.get("resnet20_cifar"), keras.optimizers.SGD(0.1))


@pytest.mark.parametrize("inplace_distillation", [True, False])
def test_one_step_sums_the_gradients_of_the_four_subnetworks(inplace_distillation):
    """SGD without momentum: the step's update is -lr x (full-width cross-entropy gradient at
    the largest resolution + the three sub-networks' KL (or label) gradients at the widths and
    resolutions the step drew)."""
    keras.utils.set_random_seed(1)
    model = tiny_model(classes=10)  # every slimmable layer kind, quick to trace
    method = MutualLearning(resolutions=RESOLUTIONS, seed=3,
                            inplace_distillation=inplace_distillation)
    optimizer = keras.optimizers.SGD(1.0)
    method.build(model, optimizer)
    images, labels = next(iter(digits(batch_size=8)))
    variables = model.trainable_variables
    before = [v.numpy().copy() for v in variables]
    widths, picks = (t.numpy() for t in method._draws(tf.constant(0, tf.int64)))
    assert 0.25 <= widths.min() and widths.max() <= 1.0 and set(picks) <= {0, 1}

    def gradient(width, x, loss_fn):
        slimmable.set_width(model, width)
        with tf.GradientTape() as tape:
            loss = loss_fn(model(x, training=True))
        return tape.gradient(loss, variables)

    teacher = model(images[0], training=True)  # full width: set_width's default
    expected = gradient(1.0, images[0], lambda out: LOSS(labels, out))
    target = tf.nn.softmax(teacher)
    for width, pick in zip([0.25, *widths], picks):
        if inplace_distillation:
            loss_fn = lambda out: tf.reduce_mean(tf.reduce_sum(  # noqa: E731
                target * (tf.math.log(target) - tf.nn.log_softmax(out)), -1))
        else:
            loss_fn = lambda out: LOSS(labels, out)  # noqa: E731
        expected = [a + b for a, b in zip(expected, gradient(width, images[pick], loss_fn))]
    slimmable.set_width(model, 1.0)

    step = tf.function(lambda batch: method.train_step(model, batch, methods.per_example_loss_fn(
        LOSS), 1))
    result = step((images, labels))
    assert float(result.extras["sub_loss"]) > 0
    for b, v, g in zip(before, variables, expected):
        np.testing.assert_allclose(b - v.numpy(), g.numpy(), atol=2e-5, rtol=1e-3)


def test_fit_lowers_the_loss_at_every_width_in_one_trace():
    keras.utils.set_random_seed(0)
    model = network()
    method = MutualLearning(resolutions=RESOLUTIONS, seed=0)
    traces = []
    original = method.train_step

    def counted(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    method.train_step = counted
    wrapper = methods.MethodModel(model, method)
    wrapper.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=LOSS)
    images, labels = next(iter(digits(batch_size=64, seed=5)))
    widths = (0.25, 0.5, 0.75, 1.0)

    def losses():
        found = {}
        for width in widths:
            slimmable.set_width(model, width)
            found[width] = float(LOSS(labels, model(images[1], training=True)))
        slimmable.set_width(model, 1.0)
        return found

    before = losses()
    history = wrapper.fit(digits(), epochs=1, steps_per_epoch=50, verbose=0).history
    after = losses()
    assert len(traces) <= 2, f"the step was traced {len(traces)} times in 50 steps"
    for width in widths:  # from ~2.30 (chance) to 1.9-2.2 (the widest learn fastest)
        assert after[width] < before[width] - 0.05, (width, before, after)
    assert history["sub_loss"][0] > 0


def test_xla_compiles_one_program_per_width_and_resolution():
    keras.utils.set_random_seed(0)
    model = tiny_model(classes=10)
    method = MutualLearning(resolutions=(12, 8), width_step=0.75, seed=0)  # grid 0.25, 1.0
    wrapper = methods.MethodModel(model, method)
    wrapper.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=LOSS,
                    jit_compile=True)
    data = digits(batch_size=16, resolutions=(12, 8))
    before = [v.numpy().copy() for v in model.trainable_variables]
    wrapper.fit(data, epochs=1, steps_per_epoch=8, verbose=0)
    programs = method.compiled_programs()
    assert 1 <= programs <= 2 * 2  # grid size x resolutions, teacher included
    last = wrapper.fit(data, epochs=1, steps_per_epoch=8, verbose=0).history["loss"][0]
    assert method.compiled_programs() <= 4 and np.isfinite(last)
    assert all(not np.array_equal(b, v.numpy())
               for b, v in zip(before, model.trainable_variables))


def test_weight_decay_only_on_conv_and_dense_kernels():
    model = models.get("us_mobilenet_v1", input_shape=(32, 32, 3), classes=3)
    optimizer = trainer.optim.make_optimizer("sgd", 0.1, 1e-4)
    MutualLearning().build(model, optimizer)
    decayed = {v.path for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    assert "stem_conv/kernel" in decayed and "predictions/kernel" in decayed
    assert "block1_pw_conv/kernel" in decayed
    assert not any("_dw_" in p or "bn" in p or p.endswith("bias") for p in decayed)
    # Coupled L2 skips the excluded variables: a zero gradient leaves a BN gamma unchanged.
    gamma = model.get_layer("stem_bn").gamma
    kernel = model.get_layer("stem_conv").kernel
    before_gamma, before_kernel = gamma.numpy().copy(), kernel.numpy().copy()
    optimizer.apply_gradients([(tf.zeros_like(gamma), gamma), (tf.zeros_like(kernel), kernel)])
    np.testing.assert_array_equal(gamma.numpy(), before_gamma)
    assert not np.array_equal(kernel.numpy(), before_kernel)


def test_trainer_config_checks():
    base = dict(model="us_resnet20_cifar", model_dir="unused", mutual_learning=True)
    for kwargs, match in [
        (dict(resolutions=(24, 16), image_size=32), "image_size .32. must be the largest"),
        (dict(resolutions=(32, 32)), "repeat"),
        (dict(resolutions=()), "at least one input size"),
        (dict(search="alternating"), "two training methods"),
    ]:
        with pytest.raises(ValueError, match=match):
            trainer.TrainConfig(**base, **kwargs).validate()


def _app(model_dir, *extra):
    return subprocess.run(
        [sys.executable, "-m", "apps.train", "--model=us_resnet20_cifar", "--dataset=digits",
         "--image_size=16", "--batch_size=32", "--lr=0.4", "--verbose=2", "--seed=0",
         "--mutual_learning", "--resolutions=12,16", "--steps_per_epoch=3", "--epochs=1",
         "--num_calibration_images=64",
         f"--model_dir={model_dir}", *extra],
        capture_output=True, text=True, timeout=400, env=ENV)


def test_mirrored_fit_on_two_logical_cpus():
    """The step under MirroredStrategy (fit): two replicas, the batch split between them."""
    script = """
import sys
import keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, "tests")
from harness import tiny_slimmable_model
import pipelines
from bl_keras.training import methods
from bl_keras.training.slimmable import MutualLearning
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = tiny_slimmable_model(classes=10)
    wrapper = methods.MethodModel(model, MutualLearning(resolutions=(12, 8)))
    wrapper.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
data = pipelines.get_dataset("digits", "train", 12, 16, True, multi_resolution=(12, 8),
                             repeat=True, seed=0)
before = [v.numpy().copy() for v in model.trainable_variables]
history = wrapper.fit(data, epochs=1, steps_per_epoch=3, verbose=0).history
assert np.isfinite(history["loss"][0]) and history["sub_loss"][0] > 0, history
assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
print("replicas", strategy.num_replicas_in_sync)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "replicas 2" in run.stdout


def test_train_app_mutual_learning_multi_worker(tmp_path):
    """apps.train --mutual_learning through the multi-worker custom loop (one worker), with
    the sub-networks on the labels (--noinplace_distillation)."""
    run = _app(tmp_path, "--strategy=multi_worker", "--inplace_distillation=false")
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["params"] == 272474 and 0 <= metrics["top1"] <= 1
    model = keras.models.load_model(tmp_path / "model.keras")
    assert slimmable.calibrated(model) == [(1.0, (16, 16))]  # evaluated at full width


def test_train_app_rejects_bad_lists():
    from absl import app

    from apps.recipe_flags import numbers  # the list flags of apps.train and apps.search

    assert numbers("resolutions", ["16", "12"], int) == (16, 12)
    with pytest.raises(app.UsageError, match="--resolutions must be a comma-separated list"):
        numbers("resolutions", ["16", "x"], int)
