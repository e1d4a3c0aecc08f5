"""Prunes the resolutions of a trained multi-resolution model (seed 002, section 4.2).

    python -m apps.prune --model_path=runs/search/model.keras --threshold=0.1 \
        --output=runs/search/pruned.keras
    python -m apps.prune --model_path=runs/search/model.keras --keep_best \
        --output=runs/search/one_level.keras

Prints the MACs before and after (and each layer's kept levels). Fine-tune the result with
`python -m apps.train --init_model=OUTPUT ...`.
"""

import json

import keras
from absl import app, flags

from bl_keras import multires, profile

FLAGS = flags.FLAGS
flags.DEFINE_string("model_path", None, "A trained .keras model with MultiResConv layers.")
flags.DEFINE_float("threshold", 0.1, "Keep the levels whose mixing weight is >= threshold.")
flags.DEFINE_bool("keep_best", False, "Keep only each layer's best level: an ordinary CNN.")
flags.DEFINE_integer("image_size", None, "Input size of the MAC count (default: the model's).")
flags.DEFINE_string("output", None, "Where to save the pruned .keras model.")
flags.mark_flag_as_required("model_path")
flags.mark_flag_as_required("output")


def main(argv):
    del argv
    model = keras.models.load_model(FLAGS.model_path, compile=False)
    pruned = multires.prune(model, threshold=FLAGS.threshold, keep_best=FLAGS.keep_best)
    size = FLAGS.image_size
    before, after = profile.count_macs(model, size), profile.count_macs(pruned, size)
    pruned.save(FLAGS.output)
    report = {
        "model_path": FLAGS.model_path,
        "output": FLAGS.output,
        "mode": "keep_best" if FLAGS.keep_best else f"threshold {FLAGS.threshold}",
        "macs_before": before,
        "macs_after": after,
        "saving": before / after,
        "params": profile.count_params(pruned),
        "kept_levels": multires.kept_levels(model, FLAGS.threshold, FLAGS.keep_best),
    }
    print(f"MACs before {before / 1e6:.2f}M, after {after / 1e6:.2f}M "
          f"({report['saving']:.2f}x fewer); saved {FLAGS.output}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    app.run(main)
