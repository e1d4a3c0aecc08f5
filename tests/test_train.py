"""The training library and `apps.train` / `apps.evaluate` on tiny settings."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from bl_keras.training import optim, trainer

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
TINY = ["--model=bl_resnet20_cifar", "--dataset=digits", "--image_size=16", "--batch_size=64",
        "--lr=0.8", "--verbose=2", "--seed=0"]


def train_app(model_dir, *extra, timeout=300):
    return subprocess.run([sys.executable, "-m", "apps.train", *TINY, f"--model_dir={model_dir}",
                           *extra], capture_output=True, text=True, timeout=timeout, env=ENV)


def history(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def test_train_app_writes_everything(tmp_path):
    run = train_app(tmp_path, "--epochs=2")
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("top1", "top5", "loss", "macs", "params", "train_images_per_second",
                "examples_skipped_as_bad"):
        assert key in metrics
    assert metrics["examples_skipped_as_bad"] == 0 and metrics["macs"] > 0
    rows = history(tmp_path)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])
    assert any(f.startswith("events") for _, _, fs in os.walk(tmp_path / "logs") for f in fs)
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.output_shape == (None, 10)

    report = tmp_path / "eval.json"
    run = subprocess.run([sys.executable, "-m", "apps.evaluate",
                          f"--model_path={tmp_path / 'model.keras'}", "--dataset=digits",
                          "--split=test", f"--output={report}"],
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    evaluated = json.loads(report.read_text())
    assert evaluated["top1"] == pytest.approx(metrics["top1"], abs=1e-6)
    assert evaluated["macs"] == metrics["macs"] and evaluated["latency_ms_graph"] > 0
    assert "| top1" in run.stdout


def test_killed_run_resumes_without_losing_or_repeating_epochs(tmp_path):
    args = [sys.executable, "-m", "apps.train", *TINY, f"--model_dir={tmp_path}", "--epochs=5"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (tmp_path / "history.csv").exists() and len(history(tmp_path)) >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM  # killed before it finished
    done = len(history(tmp_path))
    assert 1 <= done < 5

    run = train_app(tmp_path, "--epochs=5")
    assert run.returncode == 0, run.stderr[-3000:]
    assert [r["epoch"] for r in history(tmp_path)] == ["1", "2", "3", "4", "5"]
    model = keras.models.load_model(tmp_path / "model.keras")
    steps = 1257 // 64  # digits train split, remainder dropped
    assert int(model.optimizer.iterations.numpy()) == 5 * steps


def small_config(tmp_path, **kwargs):
    defaults = dict(model="bl_resnet20_cifar", model_dir=str(tmp_path), dataset="digits",
                    epochs=1, batch_size=64, image_size=16, lr=0.4, verbose=0, seed=0,
                    steps_per_epoch=3)
    defaults.update(kwargs)
    return trainer.TrainConfig(**defaults)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer.train(small_config(tmp_path, epochs=1))
    backup = tmp_path / "backup"
    before = {p: p.read_bytes() for p in backup.rglob("*") if p.is_file()}
    with pytest.raises(trainer.NonFiniteLossError, match="epoch 2, step"):
        trainer.train(small_config(tmp_path, epochs=2, lr=1e12, scale_lr=False))
    after = {p: p.read_bytes() for p in backup.rglob("*") if p.is_file()}
    assert before == after
    assert [r["epoch"] for r in history(tmp_path)] == ["1"]


def test_mirrored_fit_on_two_logical_cpus(tmp_path):
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from bl_keras.training import trainer
strategy = trainer.make_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
config = trainer.TrainConfig(model="bl_resnet20_cifar", model_dir={str(tmp_path)!r},
    dataset="digits", epochs=2, batch_size=64, image_size=16, lr=0.8, verbose=0, seed=0,
    strategy="mirrored")
print(trainer.train(config)["top1"])
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = history(tmp_path)
    assert len(rows) == 2 and float(rows[1]["loss"]) < float(rows[0]["loss"])


def test_multi_worker_strategy_path_on_one_worker(tmp_path):
    """`--strategy=multi_worker` without TF_CONFIG: one worker, through the custom step."""
    run = train_app(tmp_path, "--epochs=2", "--strategy=multi_worker")
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["top1"] > 0.2 and metrics["params"] > 0
    assert [r["epoch"] for r in history(tmp_path)] == ["1", "2"]
    assert keras.models.load_model(tmp_path / "model.keras").output_shape == (None, 10)


@pytest.mark.parametrize("precision,dtype", [("bfloat16", "bfloat16"), ("float16", "float16")])
def test_mixed_precision(tmp_path, precision, dtype):
    try:
        metrics = trainer.train(small_config(tmp_path, mixed_precision=precision))
        model = keras.models.load_model(tmp_path / "model.keras")
        conv = model.get_layer("stem_conv")
        assert conv.compute_dtype == dtype and conv.kernel.dtype == "float32"
        assert model.get_layer("predictions").compute_dtype == "float32"
        assert np.isfinite(metrics["loss"])
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(strategy="horovod"), "strategy must be one of"),
        (dict(mixed_precision="int8"), "mixed_precision must be one of"),
        (dict(optimizer="adam"), "optimizer must be one of"),
        (dict(epochs=0), "epochs must be a positive integer, got 0"),
        (dict(model="resnet9000"), "unknown model 'resnet9000'"),
    ],
)
def test_bad_config(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        trainer.train(small_config(tmp_path, **kwargs))


def test_coupled_weight_decay_goes_through_momentum():
    coupled = keras.Variable(np.ones(2, "float32"))
    decoupled = keras.Variable(np.ones(2, "float32"))
    opt_c = optim.SGDCoupledWeightDecay(0.1, momentum=0.9, l2=0.1)
    opt_d = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1)
    for _ in range(3):
        opt_c.apply_gradients([(keras.ops.zeros(2), coupled)])
        opt_d.apply_gradients([(keras.ops.zeros(2), decoupled)])
    # Coupled L2 builds momentum from the decay term: w shrinks faster than decoupled decay.
    assert float(coupled[0]) < float(decoupled[0]) < 1.0
    # One plain step (no momentum history) is exactly w - lr * (1 + nesterov momentum) * l2 * w.
    v = keras.Variable(np.ones(1, "float32"))
    optim.SGDCoupledWeightDecay(0.1, momentum=0.9, l2=0.1).apply_gradients(
        [(keras.ops.zeros(1), v)])
    assert float(v[0]) == pytest.approx(1 - 0.1 * 0.1 * 1.9, rel=1e-6)


def test_schedule_and_scaling():
    assert optim.scaled_learning_rate(0.1, 1024) == pytest.approx(0.4)
    lr = optim.schedule(0.4, 100, warmup_steps=10)
    assert float(lr(0)) == 0 and float(lr(10)) == pytest.approx(0.4)
    assert float(lr(55)) == pytest.approx(0.2, rel=1e-3) and float(lr(100)) < 1e-6
    with pytest.raises(ValueError, match="'step'"):
        optim.schedule(0.1, 10, kind="step")


def test_label_smoothing_loss():
    loss = optim.make_loss(0.1)
    probs = np.array([[0.05, 0.9, 0.05]], "float32")
    expected = keras.losses.categorical_crossentropy(
        np.array([[0, 1, 0]], "float32"), probs, label_smoothing=0.1)
    assert float(loss(np.array([1]), probs)) == pytest.approx(float(expected[0]), rel=1e-6)
    with pytest.raises(ValueError, match="1.5"):
        optim.make_loss(1.5)


def test_file_data_trains_every_epoch_in_full_despite_a_bad_file(tmp_path):
    """Files decoded in the pipeline have no known length (bad ones are skipped): the training
    stream repeats, so every epoch runs its steps (Keras would otherwise find the stream spent
    every other epoch), and the bad file is counted once, by name."""
    import tensorflow as tf

    data = tmp_path / "images"
    rng = np.random.default_rng(0)
    for split, count in (("train", 20), ("test", 6)):
        for k, color in enumerate(((200, 40, 40), (40, 40, 200))):
            folder = data / split / f"c{k}"
            folder.mkdir(parents=True)
            for i in range(count):
                image = np.clip(np.array(color) + rng.normal(0, 20, (20, 20, 3)), 0, 255)
                png = tf.io.encode_png(image.astype(np.uint8)).numpy()
                (folder / f"{i}.png").write_bytes(png)
    (data / "train" / "c0" / "broken.png").write_bytes(b"not a png")
    config = small_config(tmp_path / "run", dataset=f"folder:{data}", epochs=3,
                          batch_size=8, steps_per_epoch=None)
    metrics = trainer.train(config)
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == 3 * (41 // 8)
    assert metrics["examples_skipped_as_bad"] == 1
    assert len(history(tmp_path / "run")) == 3


def test_all_bad_training_data_fails_before_training(tmp_path):
    data = tmp_path / "images"
    for split in ("train", "test"):
        (data / split / "c0").mkdir(parents=True)
        (data / split / "c0" / "broken.png").write_bytes(b"not a png")
    config = small_config(tmp_path / "run", dataset=f"folder:{data}", batch_size=8,
                          steps_per_epoch=None)
    with pytest.raises(ValueError, match=r"fewer usable examples than one batch of 8; 1 "
                                         r"skipped as bad: \['.*broken.png'\]"):
        trainer.train(config)
