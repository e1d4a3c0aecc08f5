"""bl_keras: efficient multi-resolution convolutional networks for Keras 3."""

from bl_keras import layers, models, profile

__version__ = "0.1.0"

__all__ = ["layers", "models", "profile", "__version__"]
