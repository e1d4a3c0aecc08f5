"""Training logic: the official recipe's optimizer, schedule and loss; training loops."""

from bl_keras.training.optim import (
    OPTIMIZERS,
    SGDCoupledWeightDecay,
    SmoothedSparseCrossentropy,
    make_loss,
    make_optimizer,
    scaled_learning_rate,
    schedule,
)

__all__ = [
    "OPTIMIZERS",
    "SGDCoupledWeightDecay",
    "SmoothedSparseCrossentropy",
    "make_loss",
    "make_optimizer",
    "scaled_learning_rate",
    "schedule",
]
