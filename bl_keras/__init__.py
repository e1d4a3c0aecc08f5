"""bl_keras: efficient multi-resolution convolutional networks for Keras 3.

Importing it registers every custom layer, optimizer and loss, so `keras.models.load_model`
reads bl_keras models without `custom_objects`.
"""

from bl_keras import layers, models, multires, profile, slimmable, training

__version__ = "0.1.0"

__all__ = ["layers", "models", "multires", "profile", "slimmable", "training", "__version__"]
