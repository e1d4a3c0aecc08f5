"""`train(config)`: the training job behind `python -m apps.train`.

Single host (default, mirrored): Keras `fit` with the official recipe, resumable
(`BackupAndRestore` after every epoch, so a killed run continues from its last completed epoch
with optimizer state and schedule position), TensorBoard logs, `history.csv`, the final
`model.keras` and `metrics.json`. Multi-worker and TPU: the custom loop of
`bl_keras.training.distributed`, because Keras 3 `fit` fails under MultiWorkerMirroredStrategy
(keras issue 20585).
"""

import dataclasses
import json
import math
import os
import time

import keras

from bl_keras import models, profile, slimmable
from bl_keras.training import distributed, methods, optim
from bl_keras.training import slimmable as slimmable_training
from bl_keras.training.distributed import STRATEGIES, make_strategy

PRECISIONS = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


@dataclasses.dataclass
class TrainConfig:
    model: str | None  # a name of bl_keras.models.list_models() (None with init_model)
    model_dir: str  # checkpoints, logs, history.csv, model.keras, metrics.json
    dataset: str = "digits"  # pipelines spec (speech:PATH and speech_commands for speech models)
    data_dir: str | None = None  # where cifar/imagenet/speech_commands are prepared
    epochs: int = 10
    batch_size: int = 128  # global batch
    image_size: int = 32  # images only
    labels: str = "utterance"  # speech: "utterance" (per file) or "frame" (alignment files)
    num_frames: int | None = None  # speech window: 98 (utterance) / 49 (frame) by default
    optimizer: str = "sgd"  # "sgd" (Nesterov, coupled L2) or "adamw"
    lr: float = 0.1  # peak learning rate at batch 256 (scaled linearly) or as given
    scale_lr: bool = True  # scale `lr` by batch_size / 256
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # "cosine" (per step) or "constant"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    jit_compile: bool | str = "auto"  # Keras' "auto" is off on CPU: pass True for XLA
    mixed_precision: str = "none"  # "none", "float16", "bfloat16"
    strategy: str = "default"
    classes: int | None = None  # where the data set does not fix it
    model_kwargs: dict = dataclasses.field(default_factory=dict)  # e.g. alpha, beta
    train_split: str = "train"
    eval_split: str = "test"
    seed: int | None = None
    steps_per_epoch: int | None = None  # needed where the data set size is unknown
    color_jitter: float = 0.0
    on_error: str = "skip"
    verbose: int | str = "auto"
    init_model: str | None = None  # a saved .keras model to fine-tune (architecture + weights)
    search: str = "none"  # training method: "none" (plain) or "alternating" (seed 002's search)
    arch_split: float = 0.2  # alternating: fraction of each class held out as D_b
    arch_lr: float = 1e-4  # alternating: the architecture optimizer (Adam) ...
    arch_beta1: float = 0.5
    arch_beta2: float = 0.999
    arch_weight_decay: float = 3e-4  # ... and its coupled L2 (PyTorch Adam's weight_decay)
    mutual_learning: bool = False  # MutualNet's step (seed 003) on a slimmable model
    width_range: tuple | None = None  # mutual learning: (min, max); default the model's range
    resolutions: tuple | None = None  # mutual learning: sizes, the largest = image_size
    inplace_distillation: bool = True  # mutual learning: sub-networks learn the full softmax
    width_step: float | None = None  # mutual learning: widths from a grid (XLA: default 0.05)
    decay_kernels_only: bool = True  # mutual learning: no decay on BN, biases, depthwise
    num_calibration_images: int = 2000  # slimmable models: BN post-statistics before evaluation

    def validate(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {tuple(PRECISIONS)}, got "
                             f"{self.mixed_precision!r}")
        if self.optimizer not in optim.OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {optim.OPTIMIZERS}, got "
                             f"{self.optimizer!r}")
        for name in ("epochs", "batch_size", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.search not in methods.METHODS:
            raise ValueError(f"search must be one of {tuple(methods.METHODS)}, got "
                             f"{self.search!r}")
        if self.mutual_learning:
            if self.search != "none":
                raise ValueError(f"mutual_learning and search={self.search!r} are two training "
                                 "methods: choose one")
            if self.resolutions is not None:
                sizes = slimmable.check_resolutions(self.resolutions)
                if max(sizes) != self.image_size:
                    raise ValueError(f"image_size ({self.image_size}) must be the largest of "
                                     f"resolutions {sizes}: the full network trains on it")
            if self.width_range is not None and len(self.width_range) != 2:
                raise ValueError(f"width_range must be (min, max), got {self.width_range!r}")
        if self.init_model is not None:
            if not os.path.exists(self.init_model):
                raise ValueError(f"init_model {self.init_model!r} does not exist")
            return
        if self.model not in models.list_models():
            raise ValueError(f"unknown model {self.model!r}; known: {models.list_models()}")
        import pipelines

        speech_data = pipelines.parse_spec(self.dataset).is_speech
        if speech_data != is_speech_model(self.model):
            raise ValueError(
                f"model {self.model!r} takes {'speech' if not speech_data else 'image'} inputs "
                f"but data set {self.dataset!r} is {'speech' if speech_data else 'images'}: "
                "speech models (*_speech) train on speech:PATH or speech_commands")


def is_speech_model(name):
    """Speech acoustic models (log-mel inputs [64, frames, 3]) are named *_speech."""
    return name.endswith("_speech")


def is_speech(config):
    import pipelines

    return pipelines.parse_spec(config.dataset).is_speech


def input_shape(config):
    """The model input of the config: (size, size, 3) images or (64, frames, 3) log-mels."""
    if not is_speech(config):
        return (config.image_size, config.image_size, 3)
    from pipelines import speech

    return (speech.NUM_MEL, speech.window_frames(config.labels, config.num_frames), 3)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises at the first NaN/inf batch loss, before the epoch ends, so the epoch's backup is
    not written and the last good checkpoint survives (Keras' TerminateOnNaN would let the
    epoch end and back the bad weights up)."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"loss became {float(loss)} at epoch {self.epoch + 1}, step {batch + 1}; "
                "stopped. The last completed epoch's checkpoint is kept: lower the learning "
                "rate (or use float32) and run the same command to resume from it."
            )


class Throughput(keras.callbacks.Callback):
    """Training images per second over the epochs run in this process."""

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size
        self.images = 0
        self.seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        self.seconds += time.perf_counter() - self._start
        self.images += self._steps * self.batch_size

    @property
    def images_per_second(self):
        return self.images / self.seconds if self.seconds else None


class HistoryCSV(keras.callbacks.CSVLogger):
    """`history.csv`, appended to (a resumed run keeps its earlier rows), with 1-based epochs
    as the custom distributed loop writes them."""

    def __init__(self, path):
        super().__init__(path, append=True)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


class ReportBadData(keras.callbacks.Callback):
    """Logs, after each epoch, every example the input pipelines skipped as bad."""

    def __init__(self, reports):
        super().__init__()
        self.reports = [r for r in reports if r is not None]

    def on_epoch_end(self, epoch, logs=None):
        for report in self.reports:
            report.warn()


class EpochLoggers(keras.callbacks.Callback):
    """Calls each training method logger's `write(epoch)` (1-based) after every epoch."""

    def __init__(self, loggers):
        super().__init__()
        self.loggers = loggers

    def on_epoch_end(self, epoch, logs=None):
        for logger in self.loggers:
            logger.write(epoch + 1)


def set_precision(mixed_precision):
    keras.mixed_precision.set_global_policy(PRECISIONS[mixed_precision])


def peak_learning_rate(config):
    if config.scale_lr:
        return optim.scaled_learning_rate(config.lr, config.batch_size)
    return config.lr


def _data_kwargs(config):
    if is_speech(config):
        return dict(image_size=None, labels=config.labels, num_frames=input_shape(config)[1])
    return dict(image_size=config.image_size, color_jitter=config.color_jitter)


def train_dataset(config, input_context=None, repeat=True, subset=None, **extra):
    """The training pipeline of the config (per-replica batches with `input_context`),
    repeated: an epoch is `steps_per_epoch` batches of one endless stream, so bad examples
    skipped on the way never make an epoch run out of data. `subset`: a `pipelines.Subset`
    of the split (the search's D_a / D_b)."""
    import pipelines

    return pipelines.get_dataset(
        config.dataset, config.train_split, batch_size=config.batch_size, training=True,
        data_dir=config.data_dir, on_error=config.on_error, num_classes=config.classes,
        seed=config.seed, input_context=input_context, repeat=repeat, subset=subset,
        **_data_kwargs(config), **extra)


MUTUAL_OPTIONS = ("width_range", "resolutions", "inplace_distillation", "width_step",
                  "decay_kernels_only", "seed")


def make_method(config):
    """The training method of the config: `MutualLearning` with `mutual_learning`, else
    `methods.METHODS[config.search]`."""
    if config.mutual_learning:
        return slimmable_training.MutualLearning.from_options(
            **{name: getattr(config, name) for name in MUTUAL_OPTIONS})
    options = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
               if f.name.startswith("arch_")}
    return methods.METHODS[config.search].from_options(**options)


def method_train_dataset(config, method, input_context=None):
    """The method's training stream (the whole split, D_a zipped with D_b, or tuples of
    resolutions)."""
    return method.train_data(lambda subset, **extra: train_dataset(
        config, input_context, subset=subset, **extra))


def prepare_evaluation(config, method, network):
    """Lets the method ready the trained network for evaluation (MutualNet: BatchNorm
    post-statistics of the full width on training images)."""
    method.prepare_evaluation(network, lambda: train_dataset(config),
                              config.num_calibration_images)


def eval_dataset(config):
    import pipelines

    kwargs = _data_kwargs(config)
    kwargs.pop("color_jitter", None)
    return pipelines.get_dataset(
        config.dataset, config.eval_split, batch_size=config.batch_size, training=False,
        data_dir=config.data_dir, on_error=config.on_error, num_classes=config.classes,
        **kwargs)


def check_usable(config):
    """Raises a ValueError when the training split yields not one batch (every example bad, or
    fewer good ones than a batch): a repeated stream of it would never produce a step.
    Returns the single-pass training dataset it checked (its `num_classes`, `num_examples`)."""
    single_pass = train_dataset(config, repeat=False)
    for _ in single_pass.take(1):
        return single_pass
    report = single_pass.bad_data
    skipped = f"; {report.count} skipped as bad: {report.names[:5]}" if report.count else ""
    raise ValueError(f"the {config.train_split!r} split of {config.dataset!r} has fewer usable "
                     f"examples than one batch of {config.batch_size}{skipped}")


def steps_per_epoch(config, train):
    if config.steps_per_epoch:
        return config.steps_per_epoch
    if train.num_examples is None:
        why = (" (frame labels: windows are counted only after decoding)"
               if is_speech(config) and config.labels == "frame" else "")
        raise ValueError(f"the size of {config.dataset!r} is not known{why}: pass "
                         "steps_per_epoch")
    steps = train.num_examples // config.batch_size
    if steps < 1:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {train.num_examples} "
                         "training examples")
    return steps


def build_model(config, classes):
    """The model of the config; speech models average their per-frame outputs over time
    (`pooling="avg"`), one prediction per window. With `init_model`, the saved model
    (architecture and weights) instead: fine-tuning, e.g. of a pruned model."""
    if config.init_model is not None:
        import bl_keras  # noqa: F401  (registers the layers the file names)

        model = keras.models.load_model(config.init_model, compile=False)
        wanted, got = input_shape(config), tuple(model.inputs[0].shape[1:])
        if any(g is not None and g != w for g, w in zip(got, wanted)):
            raise ValueError(f"init_model {config.init_model!r} takes inputs {got}, but the "
                             f"config feeds {wanted} (image_size / num_frames)")
        return model
    extra = {"pooling": "avg"} if is_speech_model(config.model) else {}
    shape = input_shape(config)
    if config.mutual_learning and len(config.resolutions or ()) > 1:
        shape = (None, None, shape[-1])  # one network for every resolution
    return models.get(config.model, classes=classes, input_shape=shape, **extra,
                      **config.model_kwargs)


def num_classes(config, train):
    classes = config.classes or train.num_classes
    if classes is None:
        raise ValueError(f"the number of classes of {config.dataset!r} is not known: pass "
                         "classes")
    return classes


def make_optimizer(config, total_steps):
    warmup = int(config.warmup_epochs * total_steps / config.epochs)
    learning_rate = optim.schedule(peak_learning_rate(config), total_steps, warmup,
                                   kind=config.schedule)
    return optim.make_optimizer(config.optimizer, learning_rate, config.weight_decay)


def compile_model(model, config, total_steps=None, optimizer=None):
    """Compiles with the recipe's optimizer (or `optimizer`, e.g. the trained one), loss and
    top-1/top-5 metrics."""
    model.compile(
        optimizer=optimizer or make_optimizer(config, total_steps),
        loss=optim.make_loss(config.label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1"),
                 keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5")],
        jit_compile=config.jit_compile,
    )
    return model


def train(config):
    """Trains, evaluates and saves; returns the metrics written to `metrics.json`."""
    config.validate()
    os.makedirs(config.model_dir, exist_ok=True)
    set_precision(config.mixed_precision)
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    if config.strategy in ("multi_worker", "tpu"):
        return train_custom(config)
    strategy = make_strategy(config.strategy)
    check_usable(config)
    method = make_method(config)
    train_ds, eval_ds = method_train_dataset(config, method), eval_dataset(config)
    classes = num_classes(config, train_ds)
    steps = steps_per_epoch(config, train_ds)
    with strategy.scope():
        network = build_model(config, classes)
        model = compile_model(methods.MethodModel(network, method), config,
                              steps * config.epochs)
    throughput = Throughput(config.batch_size)
    callbacks = [
        StopOnNonFiniteLoss(),
        keras.callbacks.BackupAndRestore(os.path.join(config.model_dir, "backup"),
                                         delete_checkpoint=False),
        keras.callbacks.TensorBoard(os.path.join(config.model_dir, "logs")),
        HistoryCSV(os.path.join(config.model_dir, "history.csv")),
        ReportBadData(_reports(train_ds)),
        EpochLoggers(method.loggers(network, config.model_dir)),
        throughput,
    ]
    model.fit(train_ds, epochs=config.epochs, steps_per_epoch=steps, callbacks=callbacks,
              shuffle=False,  # the pipeline shuffles
              verbose=config.verbose)
    with strategy.scope():  # model.keras holds the network with its trained optimizer
        compile_model(network, config, optimizer=model.optimizer)
    prepare_evaluation(config, method, network)
    return finish(network, config, eval_ds, _reports(train_ds), throughput.images_per_second)


def _reports(dataset):
    return getattr(dataset, "bad_data_reports", [dataset.bad_data])


def train_custom(config):
    """Multi-worker / TPU training with the custom distributed step; the chief evaluates and
    writes `model.keras` and `metrics.json` (other workers return an empty dict)."""
    strategy = make_strategy(config.strategy)
    probe = check_usable(config)
    classes = num_classes(config, probe)
    steps = steps_per_epoch(config, probe)
    built = {}
    method = make_method(config)

    def build():
        built["model"] = build_model(config, classes)
        return built["model"]

    made = []

    def dataset_fn(context):
        made.append(method_train_dataset(config, method, context))
        return made[-1]

    loggers = []

    def on_epoch_end(epoch, row):
        if distributed.is_chief(strategy):
            if not loggers:
                loggers.extend(method.loggers(built["model"], config.model_dir))
            for logger in loggers:
                logger.write(epoch)

    start = time.perf_counter()
    rows = distributed.train_custom_loop(
        strategy, build, dataset_fn,
        epochs=config.epochs, global_batch_size=config.batch_size,
        make_optimizer=lambda: make_optimizer(config, steps * config.epochs),
        loss=optim.make_loss(config.label_smoothing), model_dir=config.model_dir,
        steps_per_epoch=steps, verbose=1 if config.verbose == "auto" else config.verbose,
        method=method, on_epoch_end=on_epoch_end)
    seconds = time.perf_counter() - start
    if not distributed.is_chief(strategy):
        return {}
    rate = len(rows) * steps * config.batch_size / seconds if rows else None
    # Bad examples counted by this (the chief's) input pipeline; each worker logs its own.
    reports = _reports(made[-1]) if made else []
    prepare_evaluation(config, method, built["model"])
    return finish(built["model"], config, eval_dataset(config), reports, rate)


def finish(model, config, eval_ds, reports, images_per_second):
    """Evaluates, saves `model.keras` and writes `metrics.json`."""
    from bl_keras import evaluation

    results = evaluation.accuracy_and_loss(model, eval_ds)
    reports = [*reports, eval_ds.bad_data]
    skipped = sum(r.count for r in reports if r is not None)
    metrics = {
        "model": config.model or model.name,
        "dataset": config.dataset,
        "eval_split": config.eval_split,
        "top1": float(results["top1"]),
        "top5": float(results["top5"]),
        "loss": float(results["loss"]),
        "accuracy_of": evaluation.accuracy_unit(is_speech(config), config.labels),
        "input_shape": list(input_shape(config)),
        "macs": profile.count_macs(model, input_shape(config)),
        "params": profile.count_params(model),
        "train_images_per_second": images_per_second,
        "examples_skipped_as_bad": skipped,
        "epochs": config.epochs,
    }
    model.save(os.path.join(config.model_dir, "model.keras"))
    with open(os.path.join(config.model_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics

