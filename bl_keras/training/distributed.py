"""A custom training loop on any `tf.distribute.Strategy` (one process, several workers, TPUs).

Keras 3's `model.fit` fails under `tf.distribute.MultiWorkerMirroredStrategy` (keras-team/keras
issue 20585: "Attempt to convert a value (PerReplica...)"). `train_custom_loop` trains a Keras
model with a `tf.function` step under `strategy.run` instead, written against the generic
`tf.distribute.Strategy` API only (`scope`, `distribute_datasets_from_function`, `run`,
`reduce`), so the same loop serves the default strategy, `MirroredStrategy`,
`MultiWorkerMirroredStrategy` and `TPUStrategy`:

>>> strategy = make_strategy("multi_worker")  # first thing in the program (reads TF_CONFIG)
>>> history = train_custom_loop(
...     strategy, lambda: models.get("bl_resnet20_cifar", classes=10),
...     lambda ctx: pipelines.get_dataset("digits", "train", 32, batch_size=64, training=True,
...                                       input_context=ctx),
...     epochs=10, global_batch_size=64, steps_per_epoch=1257 // 64,
...     make_optimizer=lambda: optim.make_optimizer("sgd", 0.1), loss=optim.make_loss(),
...     model_dir="runs/digits")

Every completed epoch is checkpointed in `model_dir` (model, optimizer and epoch, with
`tf.train.Checkpoint`); a later call with the same `model_dir` resumes after the last completed
epoch, with the optimizer's step counter (and so the learning-rate schedule) and slots restored.
"""

import csv
import inspect
import math
import os
import shutil
import tempfile

import keras
import numpy as np

from bl_keras._tensorflow import require_tensorflow
from bl_keras.training import methods

tf = require_tensorflow("bl_keras.training.distributed (the tf.distribute custom training loop)")

__all__ = ["HISTORY_FILE", "STRATEGIES", "is_chief", "make_strategy", "train_custom_loop"]

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
HISTORY_FILE = "history.csv"
_SUM = tf.distribute.ReduceOp.SUM


def make_strategy(name, tpu=None):
    """Creates a `tf.distribute.Strategy` by name.

    Args:
        name: "default" (the default strategy: one device, no distribution), "mirrored"
            (`MirroredStrategy` over the local GPUs, or the CPU), "multi_worker"
            (`MultiWorkerMirroredStrategy`, cluster from the `TF_CONFIG` environment variable;
            create it at program start-up, before other TensorFlow ops run) or "tpu"
            (`TPUStrategy` on the TPU found by `TPUClusterResolver`).
        tpu: TPU name or address for "tpu" (None: from the environment, as on Cloud TPU VMs;
            "local" for a TPU VM's own TPU).

    Returns:
        The strategy.

    Raises:
        ValueError: unknown name, or a `TF_CONFIG` that is not valid JSON.
        RuntimeError: "tpu" without a reachable TPU.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        config = os.environ.get("TF_CONFIG")
        if config:
            import json

            try:
                json.loads(config)
            except ValueError as err:
                raise ValueError(f"TF_CONFIG is not valid JSON ({err}): {config!r}") from err
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as err:
            raise RuntimeError(f"no TPU found (tpu={tpu!r}): {err}") from err
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")


def _multi_worker(strategy):
    """Whether `strategy` spans several worker processes (each running this program)."""
    check = getattr(strategy.extended, "_in_multi_worker_mode", None)
    if check is not None:
        return bool(check())
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
        return False
    jobs = resolver.cluster_spec().as_dict()
    return sum(len(jobs.get(job, ())) for job in ("chief", "worker")) > 1


def is_chief(strategy):
    """Whether this process is the chief of `strategy`'s cluster: the one that writes
    checkpoints and logs.

    The chief is the task of type "chief", or worker 0 when the cluster has no chief; a
    single-process strategy (default, mirrored, TPU) is always its own chief.

    Args:
        strategy: a `tf.distribute.Strategy`.

    Returns:
        bool.
    """
    if not _multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None or task_type == "chief":
        return True
    return (task_type == "worker" and (task_id or 0) == 0
            and "chief" not in resolver.cluster_spec().as_dict())


def _correct(y_true, y_pred):
    """Number of examples whose argmax prediction matches the (integer or one-hot) label."""
    predicted = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == y_pred.shape.rank and y_true.shape[-1] not in (None, 1):
        y_true = tf.argmax(y_true, axis=-1, output_type=tf.int32)
    y_true = tf.reshape(tf.cast(y_true, tf.int32), tf.shape(predicted))
    hits = tf.cast(tf.equal(y_true, predicted), tf.float32)
    hits = tf.reshape(hits, [tf.shape(hits)[0], -1])
    return tf.reduce_sum(tf.reduce_mean(hits, axis=1))


def _accepts_epoch(dataset_fn):
    """Whether `dataset_fn` takes a second argument (the epoch, 1-based)."""
    try:
        parameters = inspect.signature(dataset_fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


def _check_positive(name, value, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class _ChiefLogs:
    """The chief's `history.csv` (one row per completed epoch, appended) and TensorBoard
    scalars (`logs/train`, `logs/validation`, at step = the epoch).

    Args:
        model_dir: the run's directory.
        with_eval: rows have val_loss and val_accuracy.
        completed_epochs: epochs in the restored checkpoint: rows of later epochs (logged by a
            run that crashed before their checkpoint) are dropped, so no epoch repeats.
    """

    def __init__(self, model_dir, with_eval, completed_epochs):
        os.makedirs(model_dir, exist_ok=True)
        self.path = os.path.join(model_dir, HISTORY_FILE)
        self.fields = ["epoch", "loss", "accuracy"]
        if with_eval:
            self.fields += ["val_loss", "val_accuracy"]
        self.fields.append("lr")
        self._keep_rows(completed_epochs)
        self.writers = {"train": tf.summary.create_file_writer(
            os.path.join(model_dir, "logs", "train"))}
        if with_eval:
            self.writers["validation"] = tf.summary.create_file_writer(
                os.path.join(model_dir, "logs", "validation"))

    def _keep_rows(self, completed_epochs):
        """Keeps the rows of checkpointed epochs, rewriting the file when its header differs."""
        if not os.path.exists(self.path):
            return
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = [row for row in reader if row.get("epoch")]
        kept = [row for row in rows if int(row["epoch"]) <= completed_epochs]
        if header == self.fields and len(kept) == len(rows):
            return
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)

    def write(self, row):
        """Appends `row` to the CSV file and writes its scalars."""
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.fields, restval="", extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        for name, writer in self.writers.items():
            prefix = "" if name == "train" else "val_"
            with writer.as_default(step=row["epoch"]):
                tf.summary.scalar("epoch_loss", row[f"{prefix}loss"])
                tf.summary.scalar("epoch_accuracy", row[f"{prefix}accuracy"])
                if name == "train":
                    tf.summary.scalar("learning_rate", row["lr"])
            writer.flush()

    def close(self):
        for writer in self.writers.values():
            writer.close()


class _Steps:
    """The loop's `tf.function`s for one strategy, model and optimizer.

    Args:
        strategy: the `tf.distribute.Strategy`.
        model: the Keras model, built in `strategy.scope()`.
        optimizer: its optimizer, built in `strategy.scope()`.
        per_example_loss: (y_true, y_pred) -> float32 [batch].
        global_batch_size: the divisor of the summed per-example losses.
        eval_steps: batches per evaluation (None: all).
    """

    def __init__(self, strategy, model, optimizer, per_example_loss, global_batch_size,
                 eval_steps, method):
        self.method = method
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.per_example_loss = per_example_loss
        self.global_batch_size = global_batch_size
        self.eval_steps = eval_steps
        # Keras 3 updates BatchNorm moving statistics (aggregation "none") on each replica
        # separately: replicas and workers drift apart unless averaged.
        self.synced = [w for w in model.non_trainable_weights
                       if tf.as_dtype(w.dtype).is_floating
                       and getattr(w.value, "aggregation", None) == tf.VariableAggregation.NONE]
        self.train_step = tf.function(self._train_step)
        self.train_step_or_end = tf.function(self._train_step_or_end)
        self.evaluate_iterator = tf.function(self._evaluate)
        self.sync_weights = tf.function(self._sync_weights)
        self.all_finite = tf.function(self._all_finite)

    def _train_replica(self, inputs):
        """The training method's step on one replica's batch; its statistics."""
        result = self.method.train_step(self.model, inputs, self.per_example_loss,
                                        self.strategy.num_replicas_in_sync)
        per_example = result.per_example_loss
        count = tf.cast(tf.shape(per_example)[0], tf.float32)
        regularization = result.regularization / self.strategy.num_replicas_in_sync
        return tf.stack([tf.reduce_sum(per_example),
                         _correct(result.labels, result.predictions), count, regularization])

    def _train_step(self, iterator):
        """[sum of per-example losses, correct, count, regularization loss], over replicas."""
        per_replica = self.strategy.run(self._train_replica, args=(next(iterator),))
        return self.strategy.reduce(_SUM, per_replica, axis=None)

    def _train_step_or_end(self, iterator):
        """As `_train_step`, or -1s at the end of the data: under a cond, since a plain step
        would still run its data-independent ops (the optimizer's step counter) before the
        get_next error."""
        optional = iterator.get_next_as_optional()
        if optional.has_value():
            per_replica = self.strategy.run(self._train_replica, args=(optional.get_value(),))
            return self.strategy.reduce(_SUM, per_replica, axis=None)
        return tf.fill([4], -1.0)

    def _eval_replica(self, inputs):
        images, labels = inputs
        predictions = self.model(images, training=False)
        per_example = self.per_example_loss(labels, predictions)
        count = tf.cast(tf.shape(per_example)[0], tf.float32)
        return tf.stack([tf.reduce_sum(per_example), _correct(labels, predictions), count])

    def _evaluate(self, iterator):
        totals = tf.zeros([3])
        for _ in tf.range(self.eval_steps or 2**31 - 1):
            optional = iterator.get_next_as_optional()
            if not optional.has_value():  # the same on every worker (reduced over workers)
                break
            per_replica = self.strategy.run(self._eval_replica, args=(optional.get_value(),))
            totals += self.strategy.reduce(_SUM, per_replica, axis=None)
        return totals

    def evaluate(self, dataset):
        """(val_loss, val_accuracy) over a distributed dataset."""
        loss_sum, correct, count = self.evaluate_iterator(iter(dataset)).numpy().astype(float)
        if not count:
            return math.nan, math.nan
        return float(loss_sum / count), float(correct / count)

    def _sync_replica(self):
        context = tf.distribute.get_replica_context()
        means = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                                   [tf.identity(w.value) for w in self.synced])
        for weight, mean in zip(self.synced, means):
            weight.assign(mean)

    def _sync_weights(self):
        self.strategy.run(self._sync_replica)

    def end_epoch(self):
        """Averages the per-replica weights (BatchNorm moving statistics: their updates are
        linear, so this equals averaging after every step) and returns whether all weights are
        finite."""
        if self.synced and self.strategy.num_replicas_in_sync > 1:
            self.sync_weights()
        return bool(self.all_finite())

    def _all_finite(self):
        return tf.reduce_all([tf.reduce_all(tf.math.is_finite(w.value))
                              for w in self.model.weights if tf.as_dtype(w.dtype).is_floating])


def _train_epoch(steps, iterator, epoch, steps_per_epoch, progbar, model_dir):
    """Runs one epoch's steps; returns the row's loss and accuracy and the number of steps.

    Raises:
        FloatingPointError: a non-finite loss.
        ValueError: the data ran out before `steps_per_epoch`, or was empty.
    """
    totals = np.zeros(4)
    step = 0
    while steps_per_epoch is None or step < steps_per_epoch:
        if steps_per_epoch is None:
            values = steps.train_step_or_end(iterator).numpy().astype(np.float64)
            if values[2] < 0:
                break
        else:
            try:
                values = steps.train_step(iterator).numpy().astype(np.float64)
            except (StopIteration, tf.errors.OutOfRangeError):
                raise ValueError(
                    f"the training dataset ran out after {step} of "
                    f"steps_per_epoch={steps_per_epoch} steps in epoch {epoch}; nothing of "
                    f"epoch {epoch} was saved") from None
        step += 1
        step_loss = values[0] / max(values[2], 1.0) + values[3]
        if not math.isfinite(step_loss):
            raise FloatingPointError(
                f"non-finite loss {step_loss} at epoch {epoch}, step {step}; nothing of epoch "
                f"{epoch} was saved (the last checkpoint is in {model_dir!r})")
        totals += values
        if progbar is not None:
            progbar.update(step, [("loss", totals[0] / totals[2] + totals[3] / step),
                                  ("accuracy", totals[1] / totals[2])])
    if step == 0:
        raise ValueError(f"the training dataset is empty (epoch {epoch})")
    if progbar is not None and steps_per_epoch is None:
        progbar.update(step, finalize=True)
    loss = float(totals[0] / totals[2] + totals[3] / step)
    return loss, float(totals[1] / totals[2]), step


def _restore(strategy, checkpoint, model_dir):
    """Restores the latest checkpoint in `model_dir`, if any."""
    latest = tf.train.latest_checkpoint(model_dir) if os.path.isdir(model_dir) else None
    if not latest:
        return
    with strategy.scope():
        status = checkpoint.restore(latest)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as err:
        raise ValueError(f"checkpoint {latest} does not match the model: {err}") from err


def train_custom_loop(
    strategy,
    build_model,
    dataset_fn,
    *,
    epochs,
    global_batch_size,
    make_optimizer,
    loss,
    model_dir,
    steps_per_epoch=None,
    eval_dataset_fn=None,
    eval_steps=None,
    on_epoch_end=None,
    verbose=1,
    max_to_keep=3,
    method=None,
):
    """Trains a Keras model with a custom `tf.function` step under `strategy.run`, with
    per-epoch checkpoints, resume, CSV and TensorBoard logs.

    Each step runs `strategy.run` on the next per-replica batch: per-example losses summed and
    divided by the global batch (`tf.nn.compute_average_loss`), plus `model.losses` divided by
    the number of replicas (`tf.nn.scale_regularization_loss`); the optimizer all-reduces the
    gradients over the replicas of all workers. Loss and accuracy are summed over replicas and
    workers with `strategy.reduce` (loss = sum of per-example losses / number of examples, plus
    the regularization losses; accuracy = correct / number of examples).

    At the end of each epoch the float non-trainable weights (BatchNorm moving statistics:
    Keras 3 updates them per replica, so replicas and workers drift apart) are averaged over
    all replicas, the model is evaluated on `eval_dataset_fn` if given, and a checkpoint is
    saved. Every worker saves (the multi-worker pattern), but only the chief (`is_chief`) writes
    to `model_dir`; the others write to a temporary directory that is deleted right after. Then
    the chief appends a row to `model_dir/history.csv` and writes TensorBoard scalars under
    `model_dir/logs/train` (and `logs/validation`), at step = the epoch number.

    On start the latest checkpoint in `model_dir` (the chief's, read by every worker) is
    restored, and training continues with the next epoch.

    Args:
        strategy: a `tf.distribute.Strategy` (see `make_strategy`). For multi-worker training
            every worker runs this function with the same arguments.
        build_model: () -> a built Keras model (variables created), called in
            `strategy.scope()`. Its output: class scores [batch, classes].
        dataset_fn: (input_context) -> a dataset of (images, labels) batched per replica
            (`input_context.get_per_replica_batch_size(global_batch_size)`) and sharded for
            `input_context`'s input pipeline, e.g. `pipelines.get_dataset(...,
            input_context=ctx)`. If it takes a second argument, it is called as
            (input_context, epoch) with the 1-based epoch, anew each epoch: a dataset seeded by
            the epoch then makes a resumed run see the same data as an uninterrupted one.
        epochs: the epoch to train up to (epochs already in `model_dir` are not repeated).
        global_batch_size: the batch over all replicas; a multiple of
            `strategy.num_replicas_in_sync`.
        make_optimizer: () -> a Keras optimizer, called in `strategy.scope()` (schedules see
            the global step, which is restored on resume).
        loss: a Keras loss object (applied without reduction: it is recreated with
            `reduction=None`) or a function (y_true, y_pred) -> per-example losses.
        model_dir: directory of checkpoints, `history.csv` and `logs/` (created by the chief).
        steps_per_epoch: steps per epoch (each epoch starts a new pass over the dataset and
            stops after this many batches). None: until the dataset ends, not allowed with
            several workers, which must all run the same number of steps: compute it from the
            data set size, e.g. `num_examples // global_batch_size` (each worker's shard then
            has enough batches).
        eval_dataset_fn: like `dataset_fn` (input_context only), a finite evaluation dataset;
            evaluated after every epoch (partial batches are fine: workers that run out of data
            wait for the others), giving `val_loss` (mean per-example loss) and
            `val_accuracy`.
        eval_steps: evaluate at most this many batches per epoch (None: the whole dataset).
        on_epoch_end: (epoch, row) -> optional bool, called on every worker after the epoch's
            checkpoint; a true result stops training (it must agree across workers).
        verbose: 0 silent, 1 a progress bar per epoch, 2 one line per epoch (chief only).
        max_to_keep: checkpoints kept in `model_dir`.
        method: the training method whose step every replica runs (`training.methods`;
            default `Plain`: one optimizer step on all trainable variables); its other
            optimizers are checkpointed with the main one.

    Returns:
        The rows of the epochs trained by this call (dicts with keys epoch (1-based), loss,
        accuracy, [val_loss, val_accuracy,] lr: the optimizer's learning rate after the
        epoch); empty when `model_dir` already holds `epochs` epochs.

    Raises:
        FloatingPointError: a non-finite loss (naming the epoch and step) or non-finite
            weights; nothing of that epoch is saved, so the last checkpoint stays good.
        ValueError: bad arguments, `steps_per_epoch=None` with several workers, a dataset that
            runs out before `steps_per_epoch`, or a checkpoint that does not match the model.
    """
    _check_positive("epochs", epochs)
    _check_positive("global_batch_size", global_batch_size)
    _check_positive("steps_per_epoch", steps_per_epoch, allow_none=True)
    _check_positive("eval_steps", eval_steps, allow_none=True)
    if isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
        raise ValueError("ParameterServerStrategy needs a ClusterCoordinator; use "
                         "MultiWorkerMirroredStrategy")
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(f"global_batch_size {global_batch_size} must be a multiple of the "
                         f"{replicas} replicas in sync")
    if steps_per_epoch is None and _multi_worker(strategy):
        raise ValueError(
            "steps_per_epoch=None (until the dataset ends) is not allowed with several workers: "
            "every worker must run the same number of steps; pass steps_per_epoch, e.g. "
            "num_examples // global_batch_size")
    chief = is_chief(strategy)
    per_example_loss = methods.per_example_loss_fn(loss)

    with strategy.scope():
        model = build_model()
        if not model.built or not model.trainable_variables:
            raise ValueError("build_model must return a built model with trainable weights")
        optimizer = make_optimizer()
        method = method or methods.Plain()
        method.build(model, optimizer)
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    # The model's variables are listed explicitly: as a `tf.train.Checkpoint` dependency a Keras 3
    # model reaches only some of them (of bl_resnet20_cifar's 142 weights, 4 directly and the
    # trainable ones through the optimizer: most BatchNorm moving statistics were not saved).
    checkpoint = tf.train.Checkpoint(model_variables=list(model.variables), optimizer=optimizer,
                                     epoch=epoch_var, **method.trackables())
    _restore(strategy, checkpoint, model_dir)
    start_epoch = int(epoch_var.numpy())

    steps = _Steps(strategy, model, optimizer, per_example_loss, global_batch_size, eval_steps,
                   method)
    epoch_aware = _accepts_epoch(dataset_fn)
    train_data = None if epoch_aware else strategy.distribute_datasets_from_function(dataset_fn)
    eval_data = (strategy.distribute_datasets_from_function(eval_dataset_fn)
                 if eval_dataset_fn is not None else None)

    # Every worker saves (saving may need collectives); the others into a temporary directory.
    write_dir = model_dir if chief else tempfile.mkdtemp(prefix="bl_keras_worker_")
    logs = _ChiefLogs(model_dir, eval_data is not None, start_epoch) if chief else None
    history = []
    try:
        manager = tf.train.CheckpointManager(checkpoint, write_dir,
                                             max_to_keep=max_to_keep if chief else 1)
        for epoch in range(start_epoch + 1, epochs + 1):
            if epoch_aware:
                train_data = strategy.distribute_datasets_from_function(
                    lambda context, epoch=epoch: dataset_fn(context, epoch))
            progbar = None
            if chief and verbose:
                print(f"Epoch {epoch}/{epochs}")
                progbar = keras.utils.Progbar(steps_per_epoch, verbose=verbose,
                                              stateful_metrics=["loss", "accuracy"])
            train_loss, accuracy, step = _train_epoch(steps, iter(train_data), epoch,
                                                      steps_per_epoch, progbar, model_dir)
            if not steps.end_epoch():
                raise FloatingPointError(
                    f"non-finite weights after epoch {epoch}, step {step}; nothing of epoch "
                    f"{epoch} was saved (the last checkpoint is in {model_dir!r})")
            row = {"epoch": epoch, "loss": train_loss, "accuracy": accuracy}
            if eval_data is not None:
                row["val_loss"], row["val_accuracy"] = steps.evaluate(eval_data)
            row["lr"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            epoch_var.assign(epoch)
            manager.save(checkpoint_number=epoch)
            if chief:
                logs.write(row)
            else:
                shutil.rmtree(write_dir, ignore_errors=True)
            if progbar is not None and eval_data is not None:
                print(f"val_loss: {row['val_loss']:.4f} - val_accuracy: "
                      f"{row['val_accuracy']:.4f}")
            history.append(row)
            if on_epoch_end is not None and on_epoch_end(epoch, dict(row)):
                break
    finally:
        if chief:
            logs.close()
        else:
            shutil.rmtree(write_dir, ignore_errors=True)
    return history
