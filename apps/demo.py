"""The main job (`make demo`): the three papers on the bundled digits, end to end, in one run.

    python -m apps.demo [--workdir=runs/demo] [--parts=big_little,mutualnet] [--smoke]

Big-Little Net (bL-ResNet-20 against ResNet-20, int8 TFLite), a multi-resolution search with
its mixing heat map and pruned model, MutualNet with its query table, and a budgeted search
of bL-ResNet-20's alpha and beta; one summary table; the files under --workdir. TensorFlow's
INFO logs are left out (--tf_logs keeps them).
"""

import dataclasses
import sys

from absl import app, flags

from apps import quiet

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/demo", "Where models, TFLite file, plots and the summary "
                    "go.")
flags.DEFINE_list("parts", ["big_little", "multi_resolution", "mutualnet", "bl_search"],
                  "Parts to run, in order.")
flags.DEFINE_integer("epochs", None, "Training epochs of the Big-Little pair (default 8).")
flags.DEFINE_bool("smoke", False, "A few steps per part (about two minutes): the test.")
flags.DEFINE_bool("tf_logs", False, "Keep TensorFlow's and absl's INFO logs.")


def main(argv):
    if not FLAGS.tf_logs and not quiet.is_child():
        sys.exit(quiet.rerun_quietly("apps.demo", sys.argv))
    if not FLAGS.tf_logs:
        quiet.quiet_python_loggers()
    from bl_keras import demo

    settings = demo.SMOKE if FLAGS.smoke else demo.Settings()
    if FLAGS.epochs is not None:
        settings = dataclasses.replace(settings, epochs=FLAGS.epochs)
    unknown = [p for p in FLAGS.parts if p not in demo.RUNNERS]
    if unknown:
        raise app.UsageError(f"unknown --parts {unknown}; known: {list(demo.RUNNERS)}")
    demo.run(FLAGS.workdir, settings, parts=tuple(FLAGS.parts))


if __name__ == "__main__":
    app.run(main)
