"""The custom distributed training loop (`bl_keras.training.distributed`): training, resume,
NaN handling, and two `MultiWorkerMirroredStrategy` workers on localhost."""

import csv
import glob
import json
import os
import pathlib
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

import pipelines
from bl_keras import models
from bl_keras.training import distributed, optim

IMAGE_SIZE = 16
BATCH = 32
WORKER = pathlib.Path(__file__).with_name("distributed_worker.py")
REPO = WORKER.parents[1]


@pytest.fixture(scope="module")
def initial_weights():
    """One random initialization, so that runs can start from the same weights."""
    return build_model().get_weights()


def build_model(weights=None):
    model = models.get("bl_resnet20_cifar", classes=10, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3))
    if weights is not None:
        model.set_weights(weights)
    return model


def train_data(context, epoch):
    return pipelines.get_dataset("digits", "train", IMAGE_SIZE, batch_size=BATCH, training=True,
                                 seed=epoch, deterministic=True, input_context=context)


def val_data(context):
    return pipelines.get_dataset("digits", "val", IMAGE_SIZE, batch_size=BATCH, training=False,
                                 input_context=context)


def sgd(total_steps, warmup_steps, lr=0.05):
    return lambda: optim.make_optimizer("sgd", optim.schedule(lr, total_steps, warmup_steps))


def read_history(model_dir):
    with open(os.path.join(model_dir, distributed.HISTORY_FILE), newline="") as f:
        return list(csv.DictReader(f))


def checkpoint_tensors(model_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir)))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def iterations(tensors):
    (key,) = [k for k in tensors if k.startswith("optimizer/_iterations/")]
    return int(tensors[key])


def test_default_strategy_full_epochs(tmp_path, capsys):
    """Two whole passes over the digits (steps_per_epoch=None) with the default strategy."""
    model_dir = tmp_path / "run"
    seen = []
    steps = 1257 // BATCH  # the digits' training split, drop_remainder
    history = distributed.train_custom_loop(
        distributed.make_strategy("default"), build_model,
        lambda context: train_data(context, 1), epochs=2, global_batch_size=BATCH,
        make_optimizer=sgd(2 * steps, steps), loss=optim.make_loss(), model_dir=str(model_dir),
        eval_dataset_fn=val_data, on_epoch_end=lambda epoch, row: seen.append(epoch), verbose=2)
    assert "Epoch 2/2" in capsys.readouterr().out
    losses = [row["loss"] for row in history]
    print("default strategy losses", losses, "val", [row["val_loss"] for row in history])
    assert [row["epoch"] for row in history] == seen == [1, 2]
    assert losses[1] < losses[0] - 0.2, losses
    assert history[1]["val_loss"] < history[0]["val_loss"], history
    assert history[1]["val_accuracy"] > 0.3, history

    rows = read_history(model_dir)
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    np.testing.assert_allclose([float(r["loss"]) for r in rows], losses)
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-2")
    assert iterations(checkpoint_tensors(model_dir)) == 2 * steps
    for name in ("train", "validation"):
        assert glob.glob(str(model_dir / "logs" / name / "events.out.tfevents.*")), name


def test_resume_matches_uninterrupted_run(tmp_path, initial_weights):
    """A run stopped after epoch 2 of 4 and resumed ends exactly like an uninterrupted one."""
    steps, epochs = 4, 4

    def run(model_dir, **kwargs):
        return distributed.train_custom_loop(
            tf.distribute.get_strategy(), lambda: build_model(initial_weights), train_data,
            epochs=epochs, global_batch_size=BATCH, steps_per_epoch=steps,
            make_optimizer=sgd(epochs * steps, steps), loss=optim.make_loss(),
            model_dir=str(model_dir), eval_dataset_fn=val_data, verbose=0, **kwargs)

    whole = run(tmp_path / "whole")

    class Preempted(Exception):
        pass

    def preempt(epoch, row):
        if epoch == 2:
            raise Preempted

    resumed_dir = tmp_path / "resumed"
    with pytest.raises(Preempted):
        run(resumed_dir, on_epoch_end=preempt)
    assert iterations(checkpoint_tensors(resumed_dir)) == 2 * steps
    # As if the run had also logged an epoch 3 that it did not checkpoint.
    with open(resumed_dir / distributed.HISTORY_FILE, "a") as f:
        f.write("3,9.0,0.0,9.0,0.0,0.1\n")
    second = run(resumed_dir)
    assert [row["epoch"] for row in second] == [3, 4]
    assert run(resumed_dir) == []  # nothing left to train, nothing logged

    rows = read_history(resumed_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert rows == read_history(tmp_path / "whole")  # losses, val losses and lr, exactly
    assert [row["loss"] for row in second] == [row["loss"] for row in whole[2:]]
    assert whole[-1]["loss"] < whole[0]["loss"], whole
    print("resume losses", [row["loss"] for row in whole])

    expected, got = checkpoint_tensors(tmp_path / "whole"), checkpoint_tensors(resumed_dir)
    assert iterations(got) == epochs * steps
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    # Every model variable, BatchNorm moving statistics included, is in the checkpoint.
    assert len([k for k in got if k.startswith("model_variables/")]) == len(initial_weights)


def test_non_finite_loss_stops_before_saving(tmp_path, initial_weights):
    """A loss that turns NaN in epoch 2 raises FloatingPointError; epoch 1's checkpoint and
    history row survive untouched."""
    steps = 3
    poison = tf.Variable(1.0)
    base = optim.make_loss()

    def loss(y_true, y_pred):
        return base(y_true, y_pred) * poison  # a reduction-less loss: per-example values

    base.reduction = None
    saved = {}

    def after_epoch(epoch, row):
        saved.update(checkpoint_tensors(model_dir))
        poison.assign(float("nan"))

    model_dir = tmp_path / "nan"
    with pytest.raises(FloatingPointError, match=r"epoch 2, step 1\b"):
        distributed.train_custom_loop(
            tf.distribute.get_strategy(), lambda: build_model(initial_weights),
            train_data, epochs=3, global_batch_size=BATCH, steps_per_epoch=steps,
            make_optimizer=sgd(3 * steps, steps), loss=loss, model_dir=str(model_dir),
            on_epoch_end=after_epoch, verbose=0)
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-1")
    assert [int(r["epoch"]) for r in read_history(model_dir)] == [1]
    after = checkpoint_tensors(model_dir)
    assert iterations(after) == steps
    assert sorted(after) == sorted(saved)
    for key, value in saved.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
        if np.asarray(value).dtype.kind == "f":
            assert np.all(np.isfinite(value)), key


def test_non_finite_weights_stop_before_saving(tmp_path, initial_weights):
    """An infinite learning rate breaks the weights in the last step of the epoch, whose loss
    is still finite: caught before the checkpoint."""
    model_dir = tmp_path / "inf"
    with pytest.raises(FloatingPointError, match="non-finite weights after epoch 1"):
        distributed.train_custom_loop(
            tf.distribute.get_strategy(), lambda: build_model(initial_weights),
            train_data, epochs=2, global_batch_size=BATCH, steps_per_epoch=1,
            make_optimizer=lambda: optim.make_optimizer("sgd", float("inf")),
            loss=optim.make_loss(), model_dir=str(model_dir), verbose=0)
    assert tf.train.latest_checkpoint(str(model_dir)) is None
    assert not (model_dir / distributed.HISTORY_FILE).exists()


def _fake_strategy(task_type, task_id, jobs):
    cluster = tf.train.ClusterSpec({job: [f"localhost:{2000 + i}" for i in range(n)]
                                    for job, n in jobs.items()})
    resolver = types.SimpleNamespace(task_type=task_type, task_id=task_id,
                                     cluster_spec=lambda: cluster)
    extended = types.SimpleNamespace(_in_multi_worker_mode=lambda: True)
    return types.SimpleNamespace(extended=extended, cluster_resolver=resolver,
                                 num_replicas_in_sync=2)


@pytest.mark.parametrize("task_type, task_id, jobs, chief", [
    ("worker", 0, {"worker": 2}, True),
    ("worker", 1, {"worker": 2}, False),
    ("chief", 0, {"chief": 1, "worker": 2}, True),
    ("worker", 0, {"chief": 1, "worker": 2}, False),
])
def test_is_chief(task_type, task_id, jobs, chief):
    assert distributed.is_chief(_fake_strategy(task_type, task_id, jobs)) is chief


def test_is_chief_single_process():
    assert distributed.is_chief(tf.distribute.get_strategy())


def test_make_strategy_errors():
    with pytest.raises(ValueError, match="strategy must be one of"):
        distributed.make_strategy("horovod")
    with pytest.raises(RuntimeError, match="no TPU found"):
        distributed.make_strategy("tpu")


def test_argument_errors(tmp_path):
    strategy = tf.distribute.get_strategy()
    common = dict(make_optimizer=sgd(8, 2), loss=optim.make_loss(),
                  model_dir=str(tmp_path), global_batch_size=BATCH)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        distributed.train_custom_loop(strategy, build_model, train_data, epochs=0, **common)
    with pytest.raises(ValueError, match="steps_per_epoch=None .* several workers"):
        distributed.train_custom_loop(_fake_strategy("worker", 1, {"worker": 2}), build_model,
                                      train_data, epochs=1, **common)
    with pytest.raises(ValueError, match="ran out after 39 of steps_per_epoch=50"):
        distributed.train_custom_loop(strategy, build_model, train_data, epochs=1,
                                      steps_per_epoch=50, verbose=0, **common)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_on_localhost(tmp_path):
    """Two MultiWorkerMirroredStrategy workers, each its own process, train together: they end
    with identical weights (each started from its own random initialization), the loss falls,
    and only the chief writes to model_dir."""
    model_dir = tmp_path / "model"
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    procs, logs = [], []
    try:
        for index in range(2):
            tmp = tmp_path / f"tmp{index}"
            tmp.mkdir()
            env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
            env.update(TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", TMPDIR=str(tmp),
                       CUDA_VISIBLE_DEVICES="", TF_CONFIG=json.dumps({
                           "cluster": {"worker": workers},
                           "task": {"type": "worker", "index": index}}))
            log = open(tmp_path / f"worker{index}.log", "w")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, str(WORKER), str(model_dir), str(tmp_path / f"w{index}.npz"),
                 "--epochs", "2", "--steps", "4", "--global-batch", str(BATCH)],
                cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT))
        for proc in procs:
            proc.wait(timeout=300)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    for index, proc in enumerate(procs):
        output = (tmp_path / f"worker{index}.log").read_text()
        assert proc.returncode == 0, f"worker {index} failed:\n{output[-4000:]}"

    chief, other = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    assert bool(chief["chief"]) and not bool(other["chief"])
    assert int(chief["replicas"]) == int(other["replicas"]) == 2
    names = [k for k in chief.files if k.startswith("arr_")]
    assert len(names) == len(build_model().weights)
    for name in names:  # trainable weights and BatchNorm moving statistics
        np.testing.assert_allclose(chief[name], other[name], rtol=0, atol=1e-6, err_msg=name)
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_array_equal(chief[key], other[key])
    print("two-worker losses", chief["loss"], "val", chief["val_loss"])
    assert chief["loss"][1] < chief["loss"][0], chief["loss"]

    # Only the chief wrote: one history row per epoch, event files of the chief's process only,
    # and the other worker's temporary checkpoints are gone.
    assert [int(r["epoch"]) for r in read_history(model_dir)] == [1, 2]
    np.testing.assert_allclose([float(r["loss"]) for r in read_history(model_dir)],
                               chief["loss"])
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-2")
    events = glob.glob(str(model_dir / "logs" / "*" / "events.out.tfevents.*"))
    assert events and all(f".{procs[0].pid}." in os.path.basename(e) for e in events), events
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(
        ["checkpoint", "history.csv", "logs", "ckpt-1.index", "ckpt-1.data-00000-of-00001",
         "ckpt-2.index", "ckpt-2.data-00000-of-00001"])
    assert not list((tmp_path / "tmp1").iterdir())
