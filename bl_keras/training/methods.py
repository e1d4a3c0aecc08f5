"""Training methods: one object per way of training, one definition of its step.

A method owns what one training step does to a model: which variables each optimizer updates,
on which batch, with which loss. `model.fit` (through `MethodModel`, a thin wrapper whose
`train_step` calls the method) and the custom distributed loop (`training.distributed`, whose
per-replica step calls the method) run the very same step, so a method is written once and
works on one device, under `MirroredStrategy`, on several workers and with `jit_compile=True`.

- `Plain`: one optimizer step on all trainable variables (the official recipe).
- `AlternatingSearch`: section 3.4 of seed 002 (as DARTS' first-order search): each step is one
  step of the weight optimizer on the network weights with a D_a batch, then one step of the
  architecture optimizer (Adam, lr 1e-4, betas (0.5, 0.999), coupled weight decay 3e-4) on the
  architecture weights (mixing logits, beta) with the next D_b batch. Neither optimizer touches
  the other's variables; BatchNorm statistics update in both steps (train mode, as the author
  code).

In a user's script (the README shows it):

>>> model = models.multires_10x64(classes=10)
>>> search = methods.search_model(model)            # AlternatingSearch with the paper's Adam
>>> search.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
...                loss="sparse_categorical_crossentropy", metrics=["accuracy"])
>>> search.fit(methods.alternating_data(train_a, train_b), epochs=..., steps_per_epoch=...)
>>> model.save("searched.keras")                    # the wrapped model itself
"""

import collections
import copy

import keras

from bl_keras._tensorflow import require_tensorflow
from bl_keras.layers.multires import architecture_weights, network_weights
from bl_keras.training import optim

tf = require_tensorflow("bl_keras.training.methods (the steps of Plain and AlternatingSearch)")

StepResult = collections.namedtuple(
    "StepResult", "per_example_loss labels predictions regularization extras")


def per_example_loss_fn(loss):
    """A function (y_true, y_pred) -> float32 [batch] of per-example losses, from a Keras loss
    object (recreated without reduction) or a function that returns per-example values."""
    if isinstance(loss, keras.losses.Loss):
        if loss.reduction not in (None, "none"):
            try:
                loss = type(loss).from_config({**loss.get_config(), "reduction": None})
            except (TypeError, ValueError):
                loss = copy.copy(loss)
                loss.reduction = None
    elif not callable(loss):
        raise TypeError(f"loss must be a keras.losses.Loss or a function, got {loss!r}")

    def per_example(y_true, y_pred):
        values = tf.cast(loss(y_true, y_pred), tf.float32)
        if values.shape.rank == 0:
            raise ValueError("the loss must give one value per example, got a scalar")
        if values.shape.rank > 1:
            values = tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)
        return values

    return per_example


def _replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def _loss_and_gradients(model, variables, images, labels, per_example_loss, optimizer,
                        replicas):
    """The step's loss on one per-replica batch, summed over the global batch as the replicas'
    gradients are summed: mean over the batch / replicas, plus `model.losses` / replicas."""
    with tf.GradientTape() as tape:
        predictions = model(images, training=True)
        per_example = per_example_loss(labels, predictions)
        regularization = regularization_loss(model)
        loss = (tf.reduce_mean(per_example) + regularization) / replicas
        scaled = optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled, variables)
    return per_example, predictions, regularization, gradients


def regularization_loss(model):
    """The sum of `model.losses` in float32 (0 without any)."""
    if not model.losses:
        return tf.zeros([])
    return tf.add_n([tf.cast(x, tf.float32) for x in model.losses])


class Plain:
    """One optimizer step on all trainable variables per batch of (images, labels)."""

    name = "plain"

    def build(self, model, optimizer):
        """Builds the optimizer(s) on their variables; call in the strategy's scope."""
        self.optimizer = optimizer
        optimizer.build(self.weight_variables(model))

    def weight_variables(self, model):
        return model.trainable_variables

    def trackables(self):
        """Optimizers besides the main one, to save and restore with it (name -> optimizer)."""
        return {}

    metric_names = ()  # the `StepResult.extras` a step reports (averaged over the epoch)

    def weight_batch(self, batch):
        """The (images, labels) of a batch that the weight step and the metrics see."""
        return batch

    @classmethod
    def from_options(cls, **options):
        """The method from the trainer's options (those it does not take are ignored)."""
        return cls()

    def train_data(self, make_dataset):
        """The training stream: `make_dataset(subset)` with `subset=None`, the whole split."""
        return make_dataset(None)

    def loggers(self, network, model_dir):
        """Objects with `write(epoch)` called after every epoch (chief only)."""
        return []

    def prepare_evaluation(self, model, make_calibration_data, num_images=None):
        """Readies the trained model for inference (nothing to do for most methods)."""

    def train_step(self, model, batch, per_example_loss, replicas=None):
        """One step on one replica's batch; returns a `StepResult` of the weight step."""
        images, labels = batch
        variables = self.weight_variables(model)
        per_example, predictions, regularization, gradients = _loss_and_gradients(
            model, variables, images, labels, per_example_loss, self.optimizer,
            replicas or _replicas())
        self.optimizer.apply_gradients(zip(gradients, variables))
        return StepResult(per_example, labels, predictions, regularization, {})


class AlternatingSearch(Plain):
    """The alternating search of section 3.4 (seed 002).

    Each batch is ((images_a, labels_a), (images_b, labels_b)): a D_a batch for the network
    weights (the main optimizer, e.g. the trainer's SGD), then a D_b batch for the architecture
    weights (`arch_optimizer`).

    Args:
        arch_optimizer: the architecture optimizer; default `AdamCoupledWeightDecay(arch_lr,
            arch_beta1, arch_beta2, arch_weight_decay)`, the paper's Adam.
        arch_lr: 1e-4 (paper).
        arch_beta1: 0.5 (paper).
        arch_beta2: 0.999 (paper).
        arch_weight_decay: 3e-4 (paper), added to the gradient as PyTorch's Adam does.
        arch_split: the fraction of each class of the training split held out as D_b (0.2:
            CIFAR-10's 40k / 10k), for `train_data`.
    """

    name = "alternating"

    def __init__(self, arch_optimizer=None, arch_lr=1e-4, arch_beta1=0.5, arch_beta2=0.999,
                 arch_weight_decay=3e-4, arch_split=0.2):
        if isinstance(arch_split, bool) or not 0 < arch_split < 1:
            raise ValueError(f"arch_split must be in (0, 1), got {arch_split!r}")
        self.arch_split = arch_split
        self.arch_optimizer = arch_optimizer
        self._arch_options = dict(learning_rate=arch_lr, beta_1=arch_beta1, beta_2=arch_beta2,
                                  l2=arch_weight_decay)

    def build(self, model, optimizer):
        arch = architecture_weights(model)
        if not arch:
            raise ValueError(f"model {model.name!r} has no architecture weights (no learned "
                             "MultiResConv mixing or DepthMix): nothing to search")
        if self.arch_optimizer is None:  # made here, in the strategy's scope
            self.arch_optimizer = optim.AdamCoupledWeightDecay(**self._arch_options,
                                                               name="arch_optimizer")
        if keras.mixed_precision.global_policy().name == "mixed_float16" and not isinstance(
                self.arch_optimizer, keras.optimizers.LossScaleOptimizer):
            self.arch_optimizer = keras.optimizers.LossScaleOptimizer(
                self.arch_optimizer, name="arch_optimizer")
        super().build(model, optimizer)
        self.arch_optimizer.build(arch)

    def weight_variables(self, model):
        return network_weights(model)

    def trackables(self):
        return {"arch_optimizer": self.arch_optimizer} if self.arch_optimizer else {}

    metric_names = ("arch_loss",)

    def weight_batch(self, batch):
        return batch[0]

    @classmethod
    def from_options(cls, arch_split=0.2, arch_lr=1e-4, arch_beta1=0.5, arch_beta2=0.999,
                     arch_weight_decay=3e-4, **unused):
        return cls(arch_lr=arch_lr, arch_beta1=arch_beta1, arch_beta2=arch_beta2,
                   arch_weight_decay=arch_weight_decay, arch_split=arch_split)

    def train_data(self, make_dataset):
        """D_a (1 - arch_split of each class) zipped with D_b (arch_split), both endless; the
        stream's `num_examples` and `bad_data` are D_a's, `bad_data_reports` both."""
        import pipelines

        weights_data = make_dataset(pipelines.Subset(self.arch_split, "a"))
        arch_data = make_dataset(pipelines.Subset(self.arch_split, "b"))
        stream = alternating_data(weights_data, arch_data)
        stream.num_examples = weights_data.num_examples
        stream.num_classes = weights_data.num_classes
        stream.bad_data = weights_data.bad_data
        stream.bad_data_reports = [weights_data.bad_data, arch_data.bad_data]
        return stream

    def loggers(self, network, model_dir):
        from bl_keras.training.mixing_log import MixingLog

        return [MixingLog(network, model_dir)]

    def train_step(self, model, batch, per_example_loss, replicas=None):
        weights_batch, arch_batch = batch
        replicas = replicas or _replicas()
        result = super().train_step(model, weights_batch, per_example_loss, replicas)
        images, labels = arch_batch
        arch = architecture_weights(model)
        arch_per_example, _, _, gradients = _loss_and_gradients(
            model, arch, images, labels, per_example_loss, self.arch_optimizer, replicas)
        self.arch_optimizer.apply_gradients(zip(gradients, arch))
        return result._replace(extras={"arch_loss": tf.reduce_mean(arch_per_example)})


METHODS = {"none": Plain, "alternating": AlternatingSearch}  # by the trainer's `search`


@keras.saving.register_keras_serializable(package="bl_keras")
class MethodModel(keras.Model):
    """Wraps a model so that `fit` trains it with a training method's step.

    `call` is the wrapped model's; `train_step` runs `method.train_step` and updates the
    compiled loss tracker and metrics with the weight step's predictions. Save the wrapped
    model (`.network`), not the wrapper; `BackupAndRestore` checkpoints the wrapper, which holds
    the network, the main optimizer and the method's other optimizers.

    Args:
        network: the Keras model to train.
        method: a training method (`Plain`, `AlternatingSearch`, ...).
    """

    def __init__(self, network, method, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{network.name}_{method.name}"), **kwargs)
        self.network = network
        self.method = method
        for name, optimizer in method.trackables().items():
            setattr(self, name, optimizer)
        self.extra_trackers = [keras.metrics.Mean(name=n) for n in method.metric_names]
        self.built = network.built  # its variables are the network's, already created

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def _symbolic_build(self, iterator=None, data_batch=None):
        # Keras traces one batch to build the metrics: give it the weight step's (x, y).
        if data_batch is None and iterator is not None:
            for _, _, data in iterator:
                data_batch = data[0] if isinstance(data, (list, tuple)) else next(data)
                break
        if data_batch is not None:
            data_batch = self.method.weight_batch(data_batch)
        return super()._symbolic_build(data_batch=data_batch)

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        self._per_example_loss = per_example_loss_fn(keras.losses.get(loss))
        self.method.build(self.network, self.optimizer)
        for name, value in self.method.trackables().items():
            setattr(self, name, value)

    def train_step(self, data):
        result = self.method.train_step(self.network, data, self._per_example_loss)
        self._update_metrics(*result)
        return self.get_metrics_result()

    def _update_metrics(self, per_example_loss, labels, predictions, regularization, extras):
        self._loss_tracker.update_state(tf.reduce_mean(per_example_loss) + regularization)
        if self._compile_metrics is not None:
            self._compile_metrics.update_state(labels, predictions)
        for tracker in self.extra_trackers:
            tracker.update_state(extras[tracker.name])

    def make_train_function(self, force=False):
        """Keras' traced step, except with `jit_compile=True` for a method that drives its
        step as several compiled programs (`driven_step`, e.g. `MutualLearning`): then each
        batch runs those programs from Python, so XLA never compiles them as one."""
        if self.train_function is not None and not force:
            return self.train_function
        if not (self.jit_compile and hasattr(self.method, "driven_step")):
            return super().make_train_function(force)
        strategy = self.distribute_strategy
        update = tf.function(self._update_metrics)

        def function(iterator):
            if isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)):
                optional = iterator.get_next_as_optional()
                if not optional.has_value():
                    raise StopIteration
                data = optional.get_value()
            else:  # train_on_batch's generator of (x, y, sample_weight)
                data = next(iter(iterator))
            if isinstance(data, (tuple, list)) and len(data) == 3:
                data = tuple(data[:2])
            *result, extra = self.method.driven_step(self.network, data,
                                                     self._per_example_loss, strategy)
            extras = dict(zip(self.method.metric_names, [extra]))
            strategy.run(update, args=(*result, extras))
            return self.get_metrics_result()

        self.train_function = function
        return function


def search_model(model, **kwargs):
    """`MethodModel(model, AlternatingSearch(**kwargs))`: compile it with the weight optimizer
    and loss, then `fit` it on `alternating_data(d_a, d_b)`."""
    return MethodModel(model, AlternatingSearch(**kwargs))


def alternating_data(weights_data, arch_data):
    """Zips a D_a stream and a D_b stream into the ((x_a, y_a), (x_b, y_b)) batches of
    `AlternatingSearch`; D_b repeats, so it cycles when it is the shorter one."""
    return tf.data.Dataset.zip(weights_data, arch_data.repeat())


__all__ = ["METHODS", "AlternatingSearch", "MethodModel", "Plain", "StepResult",
           "alternating_data", "search_model"]
