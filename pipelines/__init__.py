"""tf.data input pipelines for bl_keras (never imports models).

>>> import pipelines
>>> train = pipelines.get_dataset("digits", "train", image_size=32, batch_size=64, training=True)
>>> model.fit(train)                                            # doctest: +SKIP
>>> train.bad_data.count                                        # examples skipped as bad
"""

from pipelines.bad_data import BadDataReport, BadExampleError
from pipelines.core import get_dataset, open_source, parse_spec

__all__ = ["BadDataReport", "BadExampleError", "get_dataset", "open_source", "parse_spec"]
