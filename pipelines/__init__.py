"""tf.data input pipelines for bl_keras (never imports models). Built in the pipelines issue."""
