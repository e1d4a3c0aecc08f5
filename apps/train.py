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

from apps import recipe_flags
from bl_keras.training import trainer

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "bl_resnet20_cifar", "A name of bl_keras.models.list_models().")
flags.DEFINE_integer("alpha", None, "Big-Little alpha (little-branch width reduction).")
flags.DEFINE_integer("beta", None, "Big-Little beta (little-branch depth reduction).")
flags.DEFINE_enum("merge", None, ["add", "concat"], "Big-Little merge (models that take it).")
flags.DEFINE_float("width_multiplier", None, "Scales every width (models that take it).")
recipe_flags.define(eval_split="test", epochs=10)
flags.DEFINE_enum("strategy", "default", list(trainer.STRATEGIES),
                  "default, mirrored (fit on all local GPUs), multi_worker (TF_CONFIG), tpu.")
flags.DEFINE_string("init_model", None, "A saved .keras model to train further (architecture "
                    "and weights from the file; --model is then not used): fine-tuning, e.g. of "
                    "a pruned model.")
flags.DEFINE_enum("search", "none", list(trainer.methods.METHODS),
                  "Training method: none (plain), alternating (seed 002's search: network "
                  "weights on D_a, then mixing weights on D_b, every step).")
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
flags.DEFINE_string("model_dir", None, "Output folder (resumes from it if it has a backup).")
flags.mark_flag_as_required("model_dir")


def config_from_flags():
    model_kwargs = {k: getattr(FLAGS, k) for k in ("alpha", "beta", "merge", "width_multiplier")
                    if getattr(FLAGS, k) is not None}
    return trainer.TrainConfig(
        model=None if FLAGS.init_model else FLAGS.model, model_dir=FLAGS.model_dir,
        strategy=FLAGS.strategy, model_kwargs=model_kwargs, init_model=FLAGS.init_model,
        search=FLAGS.search, mutual_learning=FLAGS.mutual_learning,
        width_range=recipe_flags.numbers("width_range", FLAGS.width_range, float),
        resolutions=recipe_flags.numbers("resolutions", FLAGS.resolutions, int),
        inplace_distillation=FLAGS.inplace_distillation, width_step=FLAGS.width_step,
        decay_kernels_only=FLAGS.decay_kernels_only, **recipe_flags.recipe_kwargs(),
    )


def main(argv):
    del argv
    metrics = trainer.train(config_from_flags())
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    app.run(main)
