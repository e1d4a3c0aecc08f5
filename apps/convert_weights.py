"""Converts an official PyTorch Big-Little Net checkpoint to a Keras `.keras` model.

    python -m apps.convert_weights --source=blresnet50.pth.tar --model=bl_resnet50 \
        --output=bl_resnet50.keras [--alpha=2 --beta=4 --classes=1000 \
        --include_preprocessing=true --classifier_activation=softmax]

`--source` may also be a `.npz` of the state dict. Reading `.pth` files needs torch
(`pip install bl_keras[torch]`).
"""

from absl import app, flags

from bl_keras import convert

FLAGS = flags.FLAGS
flags.DEFINE_string("source", None, "Official checkpoint (.pth, .pth.tar) or state-dict .npz.")
flags.DEFINE_string("model", None, "Model name, e.g. bl_resnet50 (see bl_keras.models).")
flags.DEFINE_string("output", None, "Where to save the Keras model (.keras).")
flags.DEFINE_integer("alpha", 2, "Little-branch width reduction of the checkpoint.")
flags.DEFINE_integer("beta", 4, "Little-branch depth reduction of the checkpoint.")
flags.DEFINE_integer("classes", 1000, "Classes of the checkpoint's classifier.")
flags.DEFINE_bool("include_preprocessing", True,
                  "Model takes RGB in [0, 255] and normalises inside (else normalised input).")
flags.DEFINE_string("classifier_activation", "softmax",
                    "Activation of the classifier; 'none' for logits.")
flags.mark_flags_as_required(["source", "model", "output"])


def main(argv):
    del argv
    activation = FLAGS.classifier_activation
    model = convert.convert_checkpoint(
        FLAGS.source,
        FLAGS.model,
        FLAGS.output,
        alpha=FLAGS.alpha,
        beta=FLAGS.beta,
        classes=FLAGS.classes,
        include_preprocessing=FLAGS.include_preprocessing,
        classifier_activation=None if activation.lower() == "none" else activation,
    )
    print(f"{FLAGS.model} (alpha={FLAGS.alpha}, beta={FLAGS.beta}): "
          f"{len(model.weights)} tensors ({model.count_params():,} values) from {FLAGS.source} "
          f"-> {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
