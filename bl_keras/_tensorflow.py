"""TensorFlow for the parts of bl_keras that are TensorFlow by nature.

Layers, models, `profile`, `multires` and `slimmable` use `keras.ops` only and run on every Keras
backend without TensorFlow installed. tf.data input, export (SavedModel, TFLite, ONNX), runtime
timing, the training methods' steps and the distributed custom loop are TensorFlow programs:
their modules get TensorFlow from `require_tensorflow`, which says what needs it when it is
missing instead of failing deep inside an import chain.
"""


def require_tensorflow(feature):
    """The `tensorflow` module, or an ImportError naming `feature` and how to get TensorFlow."""
    try:
        import tensorflow
    except ImportError as error:
        raise ImportError(
            f"{feature} needs TensorFlow, which is not installed (`pip install tensorflow`, or "
            f"`pip install bl_keras`, which pulls it in). Without it, bl_keras' layers, models, "
            f"profile, multires and slimmable still run on the JAX and PyTorch backends."
        ) from error
    return tensorflow
