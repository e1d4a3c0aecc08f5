"""Optimizers, learning-rate schedules and losses of the official training recipe."""

import keras
from keras import ops

OPTIMIZERS = ("sgd", "adamw")


class _CoupledL2:
    """Adds `l2 * w` to every gradient before the optimizer's own update (PyTorch's
    `weight_decay=` of SGD and Adam), for an optimizer class that sets `self.l2`. Variables
    passed to `exclude_from_weight_decay` (before the optimizer is built) are not decayed."""

    def update_step(self, gradient, variable, learning_rate):
        if self.l2 and self._use_weight_decay(variable):
            gradient = gradient + ops.cast(self.l2, variable.dtype) * variable
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


@keras.saving.register_keras_serializable(package="bl_keras")
class SGDCoupledWeightDecay(_CoupledL2, keras.optimizers.SGD):
    """SGD (Nesterov) with coupled L2 weight decay on all weights, as PyTorch's
    `SGD(weight_decay=...)` the official recipe uses: the gradient becomes `g + wd * w` before
    momentum. (Keras' own `weight_decay=` is decoupled: it shrinks weights outside the momentum.)

    Args:
        learning_rate: float or schedule.
        momentum: momentum (0.9).
        nesterov: Nesterov momentum.
        l2: the coupled decay coefficient (1e-4), applied to every trainable variable,
            BatchNorm parameters and biases included.
        **kwargs: passed to `keras.optimizers.SGD`.
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, nesterov=True, l2=1e-4, **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                         **kwargs)
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2!r}")
        self.l2 = l2



def scaled_learning_rate(base_lr, batch_size, reference_batch=256):
    """Linear scaling rule (Goyal et al., 2017): `base_lr * batch_size / 256`."""
    return base_lr * batch_size / reference_batch


def schedule(peak_lr, total_steps, warmup_steps=0, kind="cosine"):
    """Per-step cosine decay to 0 after an optional linear warm-up from 0, or a constant."""
    if kind == "constant":
        return peak_lr
    if kind != "cosine":
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {kind!r}")
    if total_steps <= warmup_steps:
        raise ValueError(f"total steps {total_steps} must exceed warm-up steps {warmup_steps}")
    if warmup_steps:
        return keras.optimizers.schedules.CosineDecay(
            0.0, total_steps - warmup_steps, warmup_target=peak_lr, warmup_steps=warmup_steps)
    return keras.optimizers.schedules.CosineDecay(peak_lr, total_steps)


def make_optimizer(name, learning_rate, weight_decay=1e-4, momentum=0.9):
    """`sgd`: Nesterov SGD with coupled L2 (the official recipe); `adamw`: AdamW (decoupled)."""
    if name == "sgd":
        return SGDCoupledWeightDecay(learning_rate, momentum=momentum, l2=weight_decay)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def make_loss(label_smoothing=0.0, from_logits=False):
    """Cross-entropy on integer labels, with optional label smoothing (one-hot inside)."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    return SmoothedSparseCrossentropy(label_smoothing, from_logits=from_logits)


@keras.saving.register_keras_serializable(package="bl_keras")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy with label smoothing on integer labels.

    Args:
        label_smoothing: mass spread uniformly over the classes.
        from_logits: predictions are logits.
        **kwargs: passed to `keras.losses.Loss`.
    """

    def __init__(self, label_smoothing=0.1, from_logits=False, **kwargs):
        super().__init__(**kwargs)
        self.label_smoothing = label_smoothing
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        classes = ops.shape(y_pred)[-1]
        one_hot = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), classes)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing,
                "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package="bl_keras")
class AdamCoupledWeightDecay(_CoupledL2, keras.optimizers.Adam):
    """Adam with L2 weight decay added to the gradient, as PyTorch's `Adam(weight_decay=...)`
    (the architecture optimizer of seed 002 and DARTS): the gradient becomes `g + wd * w` before
    the moment estimates. (Keras' own `weight_decay=` is decoupled, as AdamW.) PyTorch's
    epsilon (1e-8) is the default.

    Args:
        learning_rate: float or schedule (1e-4 in the paper).
        beta_1: first-moment decay (0.5 in the paper).
        beta_2: second-moment decay (0.999).
        l2: the coupled decay coefficient (3e-4 in the paper).
        epsilon: added to the denominator (1e-8, PyTorch's default).
        **kwargs: passed to `keras.optimizers.Adam`.
    """

    def __init__(self, learning_rate=1e-4, beta_1=0.5, beta_2=0.999, l2=3e-4, epsilon=1e-8,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, **kwargs)
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2!r}")
        self.l2 = l2

