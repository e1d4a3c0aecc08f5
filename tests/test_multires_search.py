"""Seed 002's alternating search, pruning and fine-tuning: the training method's step, the
trainer and apps on digits, resume, and the pruned models' export."""

import csv
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from bl_keras import export, models, multires, profile
from bl_keras.training import distributed, methods, optim, trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}


def tiny_model(**kwargs):
    return models.multires_cifar(**{"depth": 4, "filters": 8, "levels": 3,
                                    "input_shape": (16, 16, 3), "classes": 3,
                                    "classifier_activation": None, **kwargs})


def tiny_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 16, 16, 3)).astype("float32") * 255
    y = rng.integers(0, 3, n).astype("int32")
    x[np.arange(n), :, :, y] += 200  # a learnable colour cue
    return x, y


def stream(x, y, batch=8):
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch, drop_remainder=True)


def compiled_search(model, weight_lr, arch_lr, jit=False):
    search = methods.search_model(model, arch_lr=arch_lr, arch_weight_decay=0.0)
    search.compile(optimizer=keras.optimizers.SGD(weight_lr, momentum=0.9),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   jit_compile=jit)
    return search


def snapshot(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def changed(before, variables):
    return [not np.array_equal(b, keras.ops.convert_to_numpy(v)) for b, v in
            zip(before, variables)]


@pytest.mark.parametrize("step", ["weights", "architecture"])
def test_each_optimizer_changes_only_its_own_variables(step):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    x, y = tiny_data()
    data = methods.alternating_data(stream(x[:32], y[:32]), stream(x[32:], y[32:]))
    weight_lr, arch_lr = (0.1, 0.0) if step == "weights" else (0.0, 0.1)
    search = compiled_search(model, weight_lr, arch_lr)
    network, arch = multires.network_weights(model), multires.architecture_weights(model)
    stats = [w for w in model.non_trainable_weights if "moving_mean" in w.path]
    before = snapshot(network), snapshot(arch), snapshot(stats)
    search.fit(data, epochs=1, steps_per_epoch=1, verbose=0)
    moved_network, moved_arch = changed(before[0], network), changed(before[1], arch)
    if step == "weights":
        assert all(moved_network) and not any(moved_arch)
    else:
        assert all(moved_arch) and not any(moved_network)
    assert all(changed(before[2], stats))  # BN statistics update in train mode


def test_batch_norm_statistics_update_in_both_steps():
    """With both learning rates 0, a search step still moves the BN statistics twice: once on
    the D_a batch and once on the D_b batch (train mode in both, as the author code)."""
    keras.utils.set_random_seed(0)
    x, y = tiny_data()
    model = tiny_model()
    clone = tiny_model()
    clone.set_weights(model.get_weights())
    compiled_search(model, 0.0, 0.0).fit(
        methods.alternating_data(stream(x[:8], y[:8]), stream(x[8:16], y[8:16])), epochs=1,
        steps_per_epoch=1, verbose=0)
    clone(x[:8], training=True)
    clone(x[8:16], training=True)
    for a, b in zip(model.non_trainable_weights, clone.non_trainable_weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                   rtol=1e-4, atol=1e-6)


def test_search_lowers_the_loss_and_moves_the_mixing_weights_under_jit():
    keras.utils.set_random_seed(0)
    model = tiny_model()
    x, y = tiny_data(96)
    data = methods.alternating_data(stream(x[:64], y[:64]), stream(x[64:], y[64:]))
    search = compiled_search(model, 0.05, 0.05, jit=True)
    history = search.fit(data, epochs=3, steps_per_epoch=8, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert set(history) >= {"loss", "arch_loss"}
    weights = multires.mixing_weights(model)
    assert np.abs(weights - 1 / 3).max() > 1e-3
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)


def test_search_refuses_models_without_architecture_weights():
    model = models.multires_10x64_nopool(filters=4, input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match="no architecture weights"):
        compiled_search(model, 0.1, 0.1)


def test_arch_optimizer_is_pytorch_adam_with_coupled_decay():
    """One step of AdamCoupledWeightDecay = PyTorch Adam(weight_decay): g + wd * w first."""
    lr, b1, b2, wd, eps = 1e-2, 0.5, 0.999, 3e-4, 1e-8
    w0 = np.array([0.5, -1.0], np.float32)
    g = np.array([0.2, 0.1], np.float32)
    var = keras.Variable(w0)
    opt = optim.AdamCoupledWeightDecay(lr, beta_1=b1, beta_2=b2, l2=wd)
    opt.apply_gradients([(keras.ops.convert_to_tensor(g), var)])
    g2 = g + wd * w0
    m, v = (1 - b1) * g2, (1 - b2) * g2**2
    expected = w0 - lr * (m / (1 - b1)) / (np.sqrt(v / (1 - b2)) + eps)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(var), expected, rtol=1e-5)


def test_resume_restores_both_optimizers(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = tiny_data()
    data = methods.alternating_data(stream(x[:32], y[:32]), stream(x[32:], y[32:]))
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    first = compiled_search(tiny_model(), 0.05, 0.05)
    first.fit(data, epochs=1, steps_per_epoch=3, callbacks=[backup], verbose=0)
    saved_slots = snapshot(first.arch_optimizer.variables)
    second = compiled_search(tiny_model(), 0.05, 0.05)  # a new process would start like this
    restorer = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"),
                                                delete_checkpoint=False)
    restorer.set_model(second)
    restorer.on_train_begin()
    for restored, saved in zip(second.arch_optimizer.variables, saved_slots):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored), saved)
    assert int(second.optimizer.iterations.numpy()) == 3
    assert int(second.arch_optimizer.iterations.numpy()) == 3
    second.fit(data, epochs=2, steps_per_epoch=3, callbacks=[restorer], verbose=0)
    assert int(second.arch_optimizer.iterations.numpy()) == 6


def test_custom_distributed_loop_runs_the_same_search_step(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = tiny_data()
    built = {}

    def build():
        built["model"] = tiny_model()
        return built["model"]

    method = methods.AlternatingSearch(arch_lr=0.05)
    rows = distributed.train_custom_loop(
        tf.distribute.get_strategy(), build,
        lambda ctx: methods.alternating_data(stream(x[:32], y[:32]), stream(x[32:], y[32:])),
        epochs=2, global_batch_size=8, steps_per_epoch=4,
        make_optimizer=lambda: keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        model_dir=str(tmp_path), verbose=0, method=method)
    assert len(rows) == 2
    assert int(method.arch_optimizer.iterations.numpy()) == 8
    assert np.abs(multires.mixing_weights(built["model"]) - 1 / 3).max() > 1e-4


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """The trainer's alternating search on digits (16x16, 8 channels, mirrored; the same fit
    step under XLA is `test_search_lowers_the_loss_and_moves_the_mixing_weights_under_jit`)."""
    model_dir = tmp_path_factory.mktemp("search")
    config = trainer.TrainConfig(
        model="multires_10x64", model_kwargs={"filters": 8}, model_dir=str(model_dir),
        dataset="digits", image_size=16, epochs=3, batch_size=32, steps_per_epoch=6, lr=0.4,
        search="alternating", arch_lr=0.01, strategy="mirrored", seed=0,
        verbose=0)
    return model_dir, trainer.train(config)


def test_trainer_search_on_digits_writes_mixing_weights(searched):
    model_dir, metrics = searched
    with open(model_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert "arch_loss" in rows[0]
    entries = json.loads((model_dir / "mixing.json").read_text())
    assert [e["epoch"] for e in entries] == [1, 2, 3]
    alpha = np.array(entries[-1]["alpha"])
    assert alpha.shape == (10, 4) and np.abs(alpha - 0.25).max() > 1e-3
    assert (model_dir / "mixing.png").stat().st_size > 1000
    assert os.listdir(model_dir / "logs" / "mixing")
    model = keras.models.load_model(model_dir / "model.keras")
    np.testing.assert_allclose(multires.mixing_weights(model), alpha, atol=1e-5)
    assert metrics["params"] == profile.count_params(model)


def test_prune_app_fine_tune_and_export(searched, tmp_path):
    model_dir, _ = searched
    model = keras.models.load_model(model_dir / "model.keras")
    output = tmp_path / "keep_best.keras"
    run = subprocess.run([sys.executable, "-m", "apps.prune",
                          f"--model_path={model_dir / 'model.keras'}", "--keep_best",
                          f"--output={output}"], cwd=REPO, env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    before, after = re.search(r"MACs before (\S+)M, after (\S+)M", run.stdout).groups()
    best = keras.models.load_model(output)
    assert not multires.multires_layers(best)  # an ordinary CNN
    assert float(before) == pytest.approx(profile.count_macs(model) / 1e6, abs=0.01)
    assert float(after) == pytest.approx(profile.count_macs(best) / 1e6, abs=0.01)
    assert float(after) < float(before)

    multires.prune(model, threshold=0.25).save(tmp_path / "threshold.keras")
    tuned = tmp_path / "tuned"
    metrics = trainer.train(trainer.TrainConfig(
        model=None, init_model=str(tmp_path / "threshold.keras"), model_dir=str(tuned),
        dataset="digits", image_size=16, epochs=1, batch_size=32, steps_per_epoch=4, lr=0.1,
        verbose=0))
    assert metrics["model"].endswith("_pruned")
    pruned = keras.models.load_model(tmp_path / "threshold.keras")
    assert metrics["macs"] == profile.count_macs(pruned) < profile.count_macs(model)

    # The exports and the parity check `apps.export` runs, for both kinds of pruned model.
    images = np.rint(np.random.default_rng(1).random((8, 16, 16, 3)) * 255).astype("float32")
    for exported in (best, keras.models.load_model(tuned / "model.keras")):
        saved = export.export_saved_model(exported, tmp_path / f"{exported.name}_saved")
        assert export.parity(exported, saved, images)["max_abs_diff"] <= 1e-4
        flatbuffer = export.to_tflite(exported)
        result = export.parity(exported, flatbuffer, images)
        assert result["max_abs_diff"] <= 1e-4 and result["top1_agreement"] == 1.0


def test_prune_errors():
    with pytest.raises(ValueError, match="threshold must be in"):
        multires.prune(tiny_model(), threshold=1.5)
    with pytest.raises(ValueError, match="threshold must be in"):
        multires.prune(tiny_model(), threshold=0)
    with pytest.raises(ValueError, match="no MultiResConv layers"):
        multires.prune(models.resnet20_cifar(input_shape=(16, 16, 3)))


@pytest.mark.parametrize("block,depth", [("conv", False), ("mbconv", False), ("conv", True)])
def test_prune_removes_exactly_the_pruned_levels(block, depth):
    keras.utils.set_random_seed(1)
    model = tiny_model(block=block, learn_depth=depth, depth=5)
    rng = np.random.default_rng(0)
    for layer in multires.multires_layers(model):
        layer.mixing_logits.assign(rng.normal(size=3).astype("float32"))
        for bns in layer.bns.values():
            for bn in bns:
                bn.moving_mean.assign(rng.normal(size=bn.moving_mean.shape).astype("float32"))
    x = tiny_data(4)[0]
    costs = multires.level_macs(model)
    for threshold in (0.2, 0.35):
        pruned = multires.prune(model, threshold)
        kept = multires.kept_levels(model, threshold)
        removed = sum(m for (name, level), m in costs.items() if level not in kept[name])
        assert profile.count_macs(pruned) == profile.count_macs(model) - removed
        for layer, source in zip(multires.multires_layers(pruned),
                                 multires.multires_layers(model)):
            weights = keras.ops.convert_to_numpy(source.mixing_weights())
            kept_weights = weights[[source.active.index(r) for r in layer.active]]
            np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.mixing_weights()),
                                       kept_weights / kept_weights.sum(), rtol=1e-5)
            assert all(w >= threshold for w, r in zip(kept_weights, layer.active)
                       if len(layer.active) > 1)
    best = multires.prune(model, keep_best=True)
    one_level = multires.prune(model, threshold=0.999)  # the best level of each, as MultiResConv
    assert all(len(layer.active) == 1 for layer in multires.multires_layers(one_level))
    assert profile.count_macs(best) == profile.count_macs(one_level)
    np.testing.assert_allclose(best.predict(x, verbose=0), one_level.predict(x, verbose=0),
                               atol=1e-4)
    kinds = {type(layer).__name__ for layer in best.layers}
    assert "MultiResConv" not in kinds and "Conv2D" in kinds
