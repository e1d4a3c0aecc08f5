"""tf.data input pipelines for bl_keras (never imports models).

>>> import pipelines
>>> train = pipelines.get_dataset("digits", "train", image_size=32, batch_size=64, training=True)
>>> model.fit(train)                                            # doctest: +SKIP
>>> train.bad_data.count                                        # examples skipped as bad
>>> d_a = pipelines.get_dataset("digits", "train", 32, 64, training=True,
...                             subset=pipelines.Subset(0.2, "a"))  # 80 % of each class
"""

try:
    import tensorflow  # noqa: F401
except ImportError as error:
    raise ImportError(
        "pipelines (tf.data input) needs TensorFlow, which is not installed (`pip install "
        "tensorflow`); Keras' `fit` on the JAX and PyTorch backends reads tf.data datasets too."
    ) from error

from pipelines.bad_data import BadDataReport, BadExampleError
from pipelines.core import get_dataset, open_source, parse_spec
from pipelines.subsets import Subset

__all__ = ["BadDataReport", "BadExampleError", "Subset", "get_dataset", "open_source",
           "parse_spec"]
