"""The data and recipe flags that `apps.train` and `apps.search` share (one definition), and
`recipe_kwargs()`: their values as `trainer.TrainConfig` arguments."""

from absl import app, flags

FLAGS = flags.FLAGS


def define(eval_split="test", epochs=10):
    """Defines the shared flags; `eval_split` and `epochs` are the app's defaults."""
    flags.DEFINE_string("dataset", "digits",
                        "digits, cifar10, cifar100, imagenet, folder:PATH, tfrecord:GLOB; "
                        "speech:PATH or speech_commands for the *_speech models.")
    flags.DEFINE_string("data_dir", None, "Where cifar10/100, imagenet or speech_commands are "
                        "prepared.")
    flags.DEFINE_integer("classes", None, "Number of classes where the data set does not fix "
                         "it.")
    flags.DEFINE_string("train_split", "train", "Split to train on.")
    flags.DEFINE_string("eval_split", eval_split, "Split to evaluate on.")
    flags.DEFINE_integer("epochs", epochs, "Epochs.")
    flags.DEFINE_integer("batch_size", 128, "Global batch size (over all replicas and "
                         "workers).")
    flags.DEFINE_integer("image_size", 32, "Input size (224 for ImageNet); images only.")
    flags.DEFINE_enum("labels", "utterance", ["utterance", "frame"],
                      "Speech: a label per utterance (folder) or per frame (alignment files).")
    flags.DEFINE_integer("num_frames", None, "Speech window in 10 ms frames (default 98 for "
                         "utterance labels; frame labels use 49-frame windows).")
    flags.DEFINE_integer("steps_per_epoch", None, "Needed where the data set size is unknown.")
    flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adamw"],
                      "sgd: Nesterov momentum 0.9 with coupled L2 (official recipe); adamw.")
    flags.DEFINE_float("lr", 0.1, "Peak learning rate at batch 256 (scaled linearly), see "
                       "--scale_lr.")
    flags.DEFINE_bool("scale_lr", True, "Scale --lr by batch_size / 256.")
    flags.DEFINE_float("weight_decay", 1e-4, "L2 (sgd, coupled) or weight decay (adamw).")
    flags.DEFINE_enum("schedule", "cosine", ["cosine", "constant"],
                      "Per-step learning-rate schedule.")
    flags.DEFINE_float("warmup_epochs", 0.0, "Linear warm-up before the cosine decay.")
    flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing.")
    flags.DEFINE_float("color_jitter", 0.0, "ImageNet color jitter strength (0.4 officially).")
    flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                      "XLA; Keras' auto turns it off on CPU, so pass true to force it.")
    flags.DEFINE_enum("mixed_precision", "none", ["none", "float16", "bfloat16"],
                      "Mixed precision.")
    flags.DEFINE_enum("on_error", "skip", ["skip", "raise"],
                      "Bad examples: skip and count, or raise.")
    flags.DEFINE_integer("seed", None, "Seed for weights, shuffling and augmentation.")
    flags.DEFINE_integer("verbose", 1, "Keras verbosity: 1 progress bars, 2 one line per "
                         "epoch.")
    flags.DEFINE_float("arch_split", 0.2, "alternating: fraction of each class of the "
                       "training split held out as D_b (architecture weights).")
    flags.DEFINE_float("arch_lr", 1e-4, "alternating: Adam learning rate of the architecture "
                       "weights.")
    flags.DEFINE_float("arch_beta1", 0.5, "alternating: Adam beta_1.")
    flags.DEFINE_float("arch_beta2", 0.999, "alternating: Adam beta_2.")
    flags.DEFINE_float("arch_weight_decay", 3e-4, "alternating: L2 added to the architecture "
                       "gradient (PyTorch Adam's weight_decay).")
    flags.DEFINE_integer("num_calibration_images", 2000, "Slimmable models: training images "
                         "for the BatchNorm post-statistics of a width.")


NAMES = ("dataset", "data_dir", "classes", "train_split", "eval_split", "epochs", "batch_size",
         "image_size", "labels", "num_frames", "steps_per_epoch", "optimizer", "lr",
         "scale_lr", "weight_decay", "schedule", "warmup_epochs", "label_smoothing",
         "color_jitter", "mixed_precision", "on_error", "seed", "verbose", "arch_split",
         "arch_lr", "arch_beta1", "arch_beta2", "arch_weight_decay", "num_calibration_images")


def recipe_kwargs():
    """The shared flags' values as `trainer.TrainConfig` keyword arguments."""
    kwargs = {name: getattr(FLAGS, name) for name in NAMES}
    kwargs["jit_compile"] = {"auto": "auto", "true": True, "false": False}[FLAGS.jit_compile]
    return kwargs


def numbers(name, values, kind):
    """A comma-list flag's values as a tuple of `kind` (None stays None)."""
    if values is None:
        return None
    try:
        return tuple(kind(v) for v in values if v.strip())
    except ValueError:
        raise app.UsageError(f"--{name} must be a comma-separated list of numbers, got "
                             f"{','.join(values)!r}") from None

