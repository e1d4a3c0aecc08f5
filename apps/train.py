"""Trains a registered model on a data set; resumable, distributed, with XLA and mixed precision.

    python -m apps.train --model=bl_resnet20_cifar --dataset=digits --image_size=32 \
        --epochs=5 --batch_size=64 --lr=0.4 --model_dir=runs/digits

    python -m apps.train --model=multires_10x64 --search=alternating --arch_split=0.2 \
        --dataset=cifar10 --data_dir=/data/cifar --epochs=400 --model_dir=runs/search

    python -m apps.train --model=us_resnet20_cifar --mutual_learning --width_range=0.25,1.0 \
        --resolutions=32,28,24,20 --image_size=32 --dataset=digits --model_dir=runs/mutual

    python -m apps.train --init_model=runs/search/pruned.keras --dataset=cifar10 ... (fine-tune)

    python -m apps.train --model=bl_resnet22_speech --alpha=2 --beta=3 --dataset=speech:PATH \
        --classes=... --labels=utterance --num_frames=98 --model_dir=runs/speech

Running the same command again after the run was killed resumes from the last completed epoch.
See the README for ImageNet on a GPU host, on several hosts (TF_CONFIG) and on a TPU.
"""

import json

from absl import app, flags

from bl_keras.training import trainer

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "bl_resnet20_cifar", "A name of bl_keras.models.list_models().")
flags.DEFINE_integer("alpha", None, "Big-Little alpha (little-branch width reduction).")
flags.DEFINE_integer("beta", None, "Big-Little beta (little-branch depth reduction).")
flags.DEFINE_enum("merge", None, ["add", "concat"], "Big-Little merge (models that take it).")
flags.DEFINE_float("width_multiplier", None, "Scales every width (models that take it).")
flags.DEFINE_string("dataset", "digits",
                    "digits, cifar10, cifar100, imagenet, folder:PATH, tfrecord:GLOB; "
                    "speech:PATH or speech_commands for the *_speech models.")
flags.DEFINE_string("data_dir", None, "Where cifar10/100, imagenet or speech_commands are "
                    "prepared.")
flags.DEFINE_integer("classes", None, "Number of classes where the data set does not fix it.")
flags.DEFINE_string("train_split", "train", "Split to train on.")
flags.DEFINE_string("eval_split", "test", "Split to evaluate on (val for ImageNet).")
flags.DEFINE_integer("epochs", 10, "Epochs.")
flags.DEFINE_integer("batch_size", 128, "Global batch size (over all replicas and workers).")
flags.DEFINE_integer("image_size", 32, "Input size (224 for ImageNet); images only.")
flags.DEFINE_enum("labels", "utterance", ["utterance", "frame"],
                  "Speech: a label per utterance (folder) or per frame (alignment files).")
flags.DEFINE_integer("num_frames", None, "Speech window in 10 ms frames (default 98 for "
                     "utterance labels; frame labels use 49-frame windows).")
flags.DEFINE_integer("steps_per_epoch", None, "Needed where the data set size is unknown.")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adamw"],
                  "sgd: Nesterov momentum 0.9 with coupled L2 (official recipe); adamw.")
flags.DEFINE_float("lr", 0.1, "Peak learning rate at batch 256 (scaled linearly), see --scale_lr.")
flags.DEFINE_bool("scale_lr", True, "Scale --lr by batch_size / 256.")
flags.DEFINE_float("weight_decay", 1e-4, "L2 (sgd, coupled) or weight decay (adamw).")
flags.DEFINE_enum("schedule", "cosine", ["cosine", "constant"], "Per-step learning-rate schedule.")
flags.DEFINE_float("warmup_epochs", 0.0, "Linear warm-up before the cosine decay.")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing.")
flags.DEFINE_float("color_jitter", 0.0, "ImageNet color jitter strength (0.4 officially).")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "XLA; Keras' auto turns it off on CPU, so pass true to force it.")
flags.DEFINE_enum("mixed_precision", "none", ["none", "float16", "bfloat16"], "Mixed precision.")
flags.DEFINE_enum("strategy", "default", list(trainer.STRATEGIES),
                  "default, mirrored (fit on all local GPUs), multi_worker (TF_CONFIG), tpu.")
flags.DEFINE_enum("on_error", "skip", ["skip", "raise"], "Bad examples: skip and count, or raise.")
flags.DEFINE_integer("seed", None, "Seed for weights, shuffling and augmentation.")
flags.DEFINE_integer("verbose", 1, "Keras verbosity: 1 progress bars, 2 one line per epoch.")
flags.DEFINE_string("init_model", None, "A saved .keras model to train further (architecture "
                    "and weights from the file; --model is then not used): fine-tuning, e.g. of "
                    "a pruned model.")
flags.DEFINE_enum("search", "none", list(trainer.methods.METHODS),
                  "Training method: none (plain), alternating (seed 002's search: network "
                  "weights on D_a, then mixing weights on D_b, every step).")
flags.DEFINE_float("arch_split", 0.2, "alternating: fraction of each class of the training "
                   "split held out as D_b (architecture weights).")
flags.DEFINE_float("arch_lr", 1e-4, "alternating: Adam learning rate of the architecture "
                   "weights.")
flags.DEFINE_float("arch_beta1", 0.5, "alternating: Adam beta_1.")
flags.DEFINE_float("arch_beta2", 0.999, "alternating: Adam beta_2.")
flags.DEFINE_float("arch_weight_decay", 3e-4, "alternating: L2 added to the architecture "
                   "gradient (PyTorch Adam's weight_decay).")
flags.DEFINE_bool("mutual_learning", False, "MutualNet's step (seed 003) on a slimmable model "
                  "(us_*): full width on the largest resolution with the labels, the smallest "
                  "and two random widths on random resolutions distilled from it.")
flags.DEFINE_list("width_range", None, "mutual_learning: MIN,MAX widths to train (default the "
                  "model's range).")
flags.DEFINE_list("resolutions", None, "mutual_learning: input sizes, e.g. 224,192,160,128 (any "
                  "order; the largest must be --image_size). One size: US-Net.")
flags.DEFINE_bool("inplace_distillation", True, "mutual_learning: sub-networks learn the full "
                  "network's softmax; false: the labels (the paper's detection setting).")
flags.DEFINE_float("width_step", None, "mutual_learning: draw widths from MIN, MIN+STEP, ..., "
                   "MAX (with --jit_compile=true the default is 0.05: XLA compiles one program "
                   "per width and resolution).")
flags.DEFINE_bool("decay_kernels_only", True, "mutual_learning: weight decay on conv (not "
                  "depthwise) and dense kernels only, as the official recipe.")
flags.DEFINE_integer("num_calibration_images", 2000, "Slimmable models: training images for "
                     "the BatchNorm post-statistics computed before the final evaluation.")
flags.DEFINE_string("model_dir", None, "Output folder (resumes from it if it has a backup).")
flags.mark_flag_as_required("model_dir")


def _numbers(name, values, kind):
    if values is None:
        return None
    try:
        return tuple(kind(v) for v in values if v.strip())
    except ValueError:
        raise app.UsageError(f"--{name} must be a comma-separated list of numbers, got "
                             f"{','.join(values)!r}") from None


def config_from_flags():
    model_kwargs = {k: getattr(FLAGS, k) for k in ("alpha", "beta", "merge", "width_multiplier")
                    if getattr(FLAGS, k) is not None}
    jit = {"auto": "auto", "true": True, "false": False}[FLAGS.jit_compile]
    return trainer.TrainConfig(
        model=None if FLAGS.init_model else FLAGS.model, model_dir=FLAGS.model_dir,
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
        image_size=FLAGS.image_size, labels=FLAGS.labels, num_frames=FLAGS.num_frames,
        optimizer=FLAGS.optimizer, lr=FLAGS.lr,
        scale_lr=FLAGS.scale_lr, weight_decay=FLAGS.weight_decay, schedule=FLAGS.schedule,
        warmup_epochs=FLAGS.warmup_epochs, label_smoothing=FLAGS.label_smoothing,
        jit_compile=jit, mixed_precision=FLAGS.mixed_precision, strategy=FLAGS.strategy,
        classes=FLAGS.classes, model_kwargs=model_kwargs, train_split=FLAGS.train_split,
        eval_split=FLAGS.eval_split, seed=FLAGS.seed, steps_per_epoch=FLAGS.steps_per_epoch,
        color_jitter=FLAGS.color_jitter, on_error=FLAGS.on_error, verbose=FLAGS.verbose,
        init_model=FLAGS.init_model, search=FLAGS.search, arch_split=FLAGS.arch_split,
        arch_lr=FLAGS.arch_lr, arch_beta1=FLAGS.arch_beta1, arch_beta2=FLAGS.arch_beta2,
        arch_weight_decay=FLAGS.arch_weight_decay, mutual_learning=FLAGS.mutual_learning,
        width_range=_numbers("width_range", FLAGS.width_range, float),
        resolutions=_numbers("resolutions", FLAGS.resolutions, int),
        inplace_distillation=FLAGS.inplace_distillation, width_step=FLAGS.width_step,
        decay_kernels_only=FLAGS.decay_kernels_only,
        num_calibration_images=FLAGS.num_calibration_images,
    )


def main(argv):
    del argv
    metrics = trainer.train(config_from_flags())
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    app.run(main)
