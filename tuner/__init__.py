"""keras-tuner searches over bl_keras builders. Built in the tuner issue."""
