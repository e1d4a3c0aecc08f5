"""The main job (`make demo`): bL-ResNet-20 against ResNet-20 on the bundled digits, end to end.

    python -m apps.demo [--workdir=runs/demo --epochs=10]
"""

from absl import app, flags

from bl_keras import demo

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/demo", "Where models, TFLite file and plot go.")
flags.DEFINE_integer("epochs", 10, "Training epochs per model.")


def main(argv):
    del argv
    demo.run(FLAGS.workdir, epochs=FLAGS.epochs)


if __name__ == "__main__":
    app.run(main)
