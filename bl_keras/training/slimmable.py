"""The MutualNet training step (seed 003, section 3.2; the official `train.py`).

Each step trains four sub-networks of one set of weights (the sandwich rule of US-Nets): the
full width on the largest resolution with cross-entropy on the labels, then the smallest width
and `num_sampled` widths drawn uniformly in the range, each on a resolution drawn per
sub-network and step, towards the full network's detached softmax by KL divergence (batch
mean, temperature 1: inplace distillation). The four losses' gradients are summed and the
optimizer steps once. With `inplace_distillation=False` every sub-network learns from the
labels (the paper's detection setting); with one resolution it is US-Net.

Two ways to run the same step, both bounded in compilation:
- Graph (TensorFlow without XLA; `fit`, `MirroredStrategy`, the multi-worker custom loop):
  `train_step` is traced once. Sampled widths are scalar tensors (`slimmable.using_width`) and
  the layers slice with dynamic channel counts; the resolution is chosen by a `switch_case`
  over the input tuple, so one traced graph serves every width and resolution.
- Compiled programs (`fit` with `jit_compile=True`): XLA needs static shapes, so widths are
  drawn from a grid (`width_step`, 0.05 by default) and each (width, resolution) sub-network's
  forward and backward pass is one XLA program, compiled the first time it is drawn and reused.
  At most `len(grid) * len(resolutions)` programs (plus the optimizer's update) are ever
  compiled, and no program holds more than one sub-network.

Batches are (images, labels): `images` a tuple with one tensor per resolution (the same crop
resized: `pipelines.get_dataset(..., multi_resolution=sizes)`) or one tensor.

In a user's script (the README shows it):

>>> model = models.us_resnet20_cifar(classes=10)
>>> method = MutualLearning(resolutions=(32, 28, 24, 20))
>>> trainer = methods.MethodModel(model, method)
>>> trainer.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
...                 metrics=["accuracy"])
>>> trainer.fit(pipelines.get_dataset("digits", "train", 32, 64, True,
...                                   multi_resolution=(32, 28, 24, 20), repeat=True), ...)
>>> slimmable.calibrate_batch_norm(model, calibration_batches, width=0.5)
"""

import numpy as np

from bl_keras import slimmable
from bl_keras._tensorflow import require_tensorflow
from bl_keras.training.methods import (
    Plain,
    StepResult,
    _loss_and_gradients,
    _replicas,
    regularization_loss,
)

tf = require_tensorflow("bl_keras.training.slimmable (the mutual-learning train step)")

DEFAULT_XLA_WIDTH_STEP = 0.05


def kernels_to_decay(model):
    """The variables the official recipe decays: conv kernels (not depthwise) and dense
    kernels; BatchNorm, biases and depthwise kernels are left alone."""
    import keras

    from bl_keras.layers.slimmable import SlimmableConv2D, SlimmableDense

    kinds = (SlimmableConv2D, SlimmableDense, keras.layers.Conv2D, keras.layers.Dense)
    decayed = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, kinds) and not isinstance(layer, keras.layers.DepthwiseConv2D):
            decayed.add(id(layer.kernel))
    return decayed


def _outputs_probabilities(model):
    import keras

    activation = getattr(model.layers[-1], "activation", None)
    return activation is keras.activations.softmax or getattr(
        activation, "__name__", "") == "softmax"


class MutualLearning(Plain):
    """The MutualNet step; see the module docstring.

    Args:
        width_range: (min, max) widths to train; default the model's range.
        resolutions: the sizes of the batches' image tuple, in its order (None: single-size
            batches, US-Net). The largest feeds the full network.
        num_sampled: random widths per step besides the smallest and the largest (2).
        inplace_distillation: sub-networks learn the full network's softmax (True) or the
            labels (False).
        width_step: draw the random widths from min, min + step, ..., max instead of
            uniformly; with `jit_compile=True` a grid is needed (default 0.05).
        decay_kernels_only: exclude BatchNorm, biases and depthwise kernels from the
            optimizer's weight decay (the official ImageNet recipe).
        seed: seed of the width and resolution draws (stateless: identical on every replica).
    """

    name = "mutual"

    def __init__(self, width_range=None, resolutions=None, num_sampled=2,
                 inplace_distillation=True, width_step=None, decay_kernels_only=True, seed=0):
        self.width_range = None if width_range is None else tuple(
            float(w) for w in width_range)
        self.resolutions = None if resolutions is None else tuple(
            slimmable.check_resolutions(resolutions))
        if isinstance(num_sampled, bool) or not isinstance(num_sampled, int) or (
                num_sampled < 0):
            raise ValueError(f"num_sampled must be an integer >= 0, got {num_sampled!r}")
        self.num_sampled = num_sampled
        self.inplace_distillation = bool(inplace_distillation)
        self.width_step = width_step
        self.decay_kernels_only = bool(decay_kernels_only)
        self.seed = int(seed or 0)
        self._programs = {}

    @classmethod
    def from_options(cls, width_range=None, resolutions=None, inplace_distillation=True,
                     width_step=None, decay_kernels_only=True, seed=None, **unused):
        return cls(width_range=width_range, resolutions=resolutions,
                   inplace_distillation=inplace_distillation, width_step=width_step,
                   decay_kernels_only=decay_kernels_only, seed=seed)

    metric_names = ("sub_loss",)

    def build(self, model, optimizer):
        low, high = slimmable.width_range(model)
        if self.width_range is None:
            self.width_range = (low, high)
        for width in self.width_range:
            slimmable.check_width(model, width)
        if self.width_range[0] > self.width_range[1]:
            raise ValueError(f"width_range must be (min, max), got {self.width_range}")
        # Every width the step may draw must run every layer (the rounding is not monotone
        # below the divisor): check a fine grid now rather than fail in a traced step.
        for width in self.widths(fine=True):
            for layer in slimmable.slimmable_layers(model):
                layer.check_width(width)
        self.probabilities = _outputs_probabilities(model)
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's
        if self.decay_kernels_only and hasattr(inner, "exclude_from_weight_decay"):
            decayed = kernels_to_decay(model)
            inner.exclude_from_weight_decay(
                var_list=[v for v in model.trainable_variables if id(v) not in decayed])
        super().build(model, optimizer)

    def widths(self, fine=False):
        """The grid the random widths come from (`width_step`), or a fine one (`fine`)."""
        step = self.width_step or (DEFAULT_XLA_WIDTH_STEP if not fine else None)
        if fine and not self.width_step:
            step = (self.width_range[1] - self.width_range[0]) / 1000 or 1.0
        return tuple(slimmable.width_grid(*self.width_range, step))

    def train_data(self, make_dataset):
        if self.resolutions is None or len(self.resolutions) == 1:
            return make_dataset(None)
        return make_dataset(None, multi_resolution=self.resolutions)

    def weight_batch(self, batch):
        """The full network's (images, labels): the largest resolution."""
        images, labels = self._split(batch)
        return images[self._largest()], labels

    # The pieces both paths share.

    def _split(self, batch):
        images, labels = batch
        images = tuple(images) if isinstance(images, (tuple, list)) else (images,)
        if self.resolutions is not None and len(images) != len(self.resolutions):
            raise ValueError(f"batches hold {len(images)} resolutions, the method expects "
                             f"{len(self.resolutions)} ({self.resolutions})")
        return images, labels

    def _largest(self, images=None):
        if self.resolutions is not None:
            return int(np.argmax(self.resolutions))
        return 0

    def _sub_loss(self, labels, target, outputs, per_example_loss):
        """Per-example loss of a sub-network: KL(teacher || student), or the labels'."""
        if not self.inplace_distillation:
            return per_example_loss(labels, outputs)
        outputs = tf.cast(outputs, tf.float32)
        if self.probabilities:
            log_student = tf.math.log(tf.clip_by_value(outputs, 1e-12, 1.0))
            log_target = tf.math.log(tf.clip_by_value(target, 1e-12, 1.0))
        else:
            log_student = tf.nn.log_softmax(outputs)
            log_target = tf.math.log(tf.clip_by_value(target, 1e-12, 1.0))
        return tf.reduce_sum(target * (log_target - log_student), axis=-1)

    def _target(self, teacher_outputs):
        teacher = tf.cast(tf.stop_gradient(teacher_outputs), tf.float32)
        return teacher if self.probabilities else tf.nn.softmax(teacher)

    def _teacher_pass(self, model, images, labels, per_example_loss, replicas):
        with slimmable.using_width(model, self.width_range[1]):
            return _loss_and_gradients(model, model.trainable_variables, images, labels,
                                       per_example_loss, self.optimizer, replicas)

    def _student_pass(self, model, width, images, labels, target, per_example_loss, replicas):
        variables = model.trainable_variables
        with tf.GradientTape() as tape:
            with slimmable.using_width(model, width):
                outputs = model(images, training=True)
            loss = tf.reduce_mean(self._sub_loss(labels, target, outputs,
                                                 per_example_loss)) / replicas
            scaled = self.optimizer.scale_loss(loss)
        return loss * replicas, tape.gradient(scaled, variables)

    # Graph path: one trace for every width and resolution.

    def _draws(self, step):
        """Stateless draws of this step: `num_sampled` widths and a resolution index per
        sub-network (the same on every replica)."""
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        low, high = self.width_range
        if self.width_step:
            grid = tf.constant(self.widths(), tf.float32)
            index = tf.random.stateless_uniform([self.num_sampled], seed, 0, len(grid),
                                                dtype=tf.int32)
            widths = tf.gather(grid, index)
        else:
            widths = tf.random.stateless_uniform([self.num_sampled], seed, low, high)
        count = len(self.resolutions) if self.resolutions else 1
        picks = tf.random.stateless_uniform([self.num_sampled + 1], seed + 1, 0, count,
                                            dtype=tf.int32)
        return widths, picks

    def train_step(self, model, batch, per_example_loss, replicas=None):
        images, labels = self._split(batch)
        replicas = replicas or _replicas()
        largest = self._largest(images)
        per_example, outputs, regularization, gradients = self._teacher_pass(
            model, images[largest], labels, per_example_loss, replicas)
        target = self._target(outputs)
        widths, picks = self._draws(self.optimizer.iterations)
        sub_losses = []
        sub_widths = [self.width_range[0]] + [widths[i] for i in range(self.num_sampled)]
        for i, width in enumerate(sub_widths):
            if len(images) == 1:
                chosen = images[0]
            else:
                chosen = tf.switch_case(picks[i], [lambda x=x: x for x in images])
            loss, more = self._student_pass(model, width, chosen, labels, target,
                                            per_example_loss, replicas)
            gradients = _add(gradients, more)
            sub_losses.append(loss)
        variables = model.trainable_variables
        self.optimizer.apply_gradients(zip(gradients, variables))
        return StepResult(per_example, labels, outputs, regularization,
                          {"sub_loss": tf.add_n(sub_losses) / len(sub_losses)})

    # Compiled-program path (XLA): one program per (width, resolution), driven from Python.

    def driven_step(self, model, batch, per_example_loss, strategy):
        """One step as a sequence of compiled programs (for `jit_compile=True`); returns the
        weight step's (per-example loss, labels, predictions, regularization, sub-network
        loss), per replica."""
        grid = self.widths()
        rng = np.random.default_rng([self.seed, int(self.optimizer.iterations.numpy())])
        count = len(self.resolutions) if self.resolutions else 1
        picks = rng.integers(0, count, size=self.num_sampled + 1)
        sampled = [grid[i] for i in rng.integers(0, len(grid), size=self.num_sampled)]
        replicas = strategy.num_replicas_in_sync
        largest = self._largest(None)
        variables = model.trainable_variables

        def zeros(batch):
            images, labels = self._split(batch)
            classes = model.outputs[0].shape[-1]
            return (tf.zeros([tf.shape(labels)[0], classes]),
                    [tf.zeros_like(v) for v in variables])

        target, gradients = strategy.run(zeros, args=(batch,))
        teacher = self._program(model, self.width_range[1], largest, per_example_loss,
                                replicas)
        one, zero = tf.constant(1.0), tf.constant(0.0)  # tensors: one trace per program
        per_example, outputs, labels, regularization, _, gradients = strategy.run(
            teacher, args=(batch, target, gradients, one, zero))
        target = strategy.run(self._target, args=(outputs,))
        sub_losses = []
        ce_weight, kl_weight = (zero, one) if self.inplace_distillation else (one, zero)
        for width, pick in zip([self.width_range[0], *sampled], picks):
            student = self._program(model, width, int(pick), per_example_loss, replicas)
            *_, loss, gradients = strategy.run(
                student, args=(batch, target, gradients, ce_weight, kl_weight))
            sub_losses.append(loss)
        strategy.run(self._apply_program(model), args=(gradients,))
        sub_loss = strategy.run(lambda *x: tf.add_n(list(x)) / len(x), args=tuple(sub_losses))
        return per_example, labels, outputs, regularization, sub_loss

    def _program(self, model, width, index, per_example_loss, replicas):
        """The XLA program of the sub-network at (width, resolution index): its forward and
        backward pass for `ce_weight` x cross-entropy (with the regularization losses) +
        `kl_weight` x KL towards `target`, its gradients added to `gradients`. The full
        network (as teacher) and the sub-networks share programs."""
        key = (round(float(width), 6), index)
        if key in self._programs:
            return self._programs[key]
        variables = model.trainable_variables

        def program(batch, target, gradients, ce_weight, kl_weight):
            images, labels = self._split(batch)
            with tf.GradientTape() as tape:
                with slimmable.using_width(model, key[0]):
                    outputs = model(images[index], training=True)
                per_example = per_example_loss(labels, outputs)
                regularization = regularization_loss(model)
                distillation = tf.reduce_mean(self._sub_loss(labels, target, outputs,
                                                             per_example_loss))
                loss = (ce_weight * (tf.reduce_mean(per_example) + regularization)
                        + kl_weight * distillation) / replicas
                scaled = self.optimizer.scale_loss(loss)
            more = tape.gradient(scaled, variables)
            sub_loss = distillation if self.inplace_distillation else tf.reduce_mean(
                per_example)
            return per_example, outputs, labels, regularization, sub_loss, _add(gradients, more)

        self._programs[key] = tf.function(program, jit_compile=True)
        return self._programs[key]

    def _apply_program(self, model):
        if "apply" not in self._programs:
            def apply(gradients):
                self.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            self._programs["apply"] = tf.function(apply, jit_compile=True)
        return self._programs["apply"]

    def compiled_programs(self):
        """How many (width, resolution) programs have been traced so far (not the update)."""
        return sum(fn.experimental_get_tracing_count()
                   for key, fn in self._programs.items() if key != "apply")

    def prepare_evaluation(self, model, make_calibration_data, num_images=None):
        """Calibrates BatchNorm at the full width on `num_images` (default 2,000) training
        images at the evaluation size (`make_calibration_data()`, as the official validation),
        so the trained model can be evaluated and saved; other widths are calibrated when they
        are used."""
        slimmable.calibrate_batch_norm(model, make_calibration_data(), width=self.width_range[1],
                                       num_images=num_images or
                                       slimmable.DEFAULT_CALIBRATION_IMAGES)


def _add(gradients, more):
    return [a if b is None else b if a is None else a + b for a, b in zip(gradients, more)]


__all__ = ["MutualLearning"]
