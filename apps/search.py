"""A keras-tuner search under a compute budget: "what is the most accurate network I can
afford?"

    python -m apps.search --space=bl --model=bl_resnet20_cifar --dataset=digits \
        --budget_macs=30e6 --max_trials=8 --oracle=bayesian --epochs=5 --lr=0.4 \
        --batch_size=64 --directory=runs/search --output=runs/search/bl.json

    python -m apps.search --space=multires --model=multires_10x64 --levels=2,3,4 \
        --budget_macs=150e6 --epochs=20 --fine_tune_epochs=10 ...

    python -m apps.search --space=width_resolution --model_path=runs/mutual/model.keras \
        --resolutions=32,28,24,20 --widths=0.25:1.0:0.05 --budget_macs=10e6 --max_trials=20

Progress per trial; at the end a table of every trial, the best under the budget and the
Pareto front, written as JSON (`--output`), CSV and PNG beside it. Running the same command
again continues the search in `--directory` (completed trials are kept). With keras-tuner's
KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT set, the process is the
chief (`KERASTUNER_TUNER_ID=chief`, it proposes and writes the result) or a worker.
"""

import json

from absl import app, flags

from apps import recipe_flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("space", None, ["bl", "multires", "width_resolution"], "What to search.")
flags.DEFINE_string("model", None, "bl / multires: the model to search (e.g. bl_resnet20_cifar, "
                    "bl_resnet50, multires_10x64).")
flags.DEFINE_string("model_path", None, "width_resolution: a trained slimmable model "
                    "(.keras).")
flags.DEFINE_string("model_kwargs", None, "JSON of fixed builder arguments, e.g. "
                    "'{\"filters\": 16}'.")
flags.DEFINE_float("budget_macs", None, "Largest MACs per image.")
flags.DEFINE_float("budget_latency_ms", None, "Largest batch-1 float32 TFLite latency on this "
                   "machine (measured per configuration, cached).")
flags.DEFINE_integer("max_trials", 10, "Trials to run in all.")
flags.DEFINE_enum("oracle", "bayesian", ["bayesian", "random", "grid"], "How to propose.")
flags.DEFINE_integer("search_seed", None, "Seed of the oracle's proposals (0 is a seed); "
                     "default --seed.")
flags.DEFINE_string("directory", "runs/search", "keras-tuner's project folder's parent.")
flags.DEFINE_string("project_name", None, "keras-tuner's project name (default the space).")
flags.DEFINE_string("output", None, "Result JSON (CSV and PNG beside it); default "
                    "DIRECTORY/PROJECT/result.json.")
flags.DEFINE_list("alpha", None, "bl: alphas to try (default 1,2,4).")
flags.DEFINE_list("beta", None, "bl: betas to try (default 1,2,3,4).")
flags.DEFINE_list("merge", None, "bl: merges to try (default add,concat where the model "
                  "takes merge).")
flags.DEFINE_list("levels", None, "multires: levels to try (default 2,3,4).")
flags.DEFINE_list("pool", None, "multires: poolings to try (default max,avg).")
flags.DEFINE_list("upsample", None, "multires: upsamplings to try (default nearest,bilinear).")
flags.DEFINE_list("block", None, "multires: blocks to try (default conv; mbconv too).")
flags.DEFINE_integer("fine_tune_epochs", None, "multires: epochs of the pruned model's "
                     "fine-tune (default --epochs).")
flags.DEFINE_string("widths", None, "width_resolution: MIN:MAX:STEP or a list (default the "
                    "model's range in 0.05 steps).")
flags.DEFINE_list("resolutions", None, "width_resolution: input sizes (default "
                  "--image_size).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored"], "Each trial's strategy: "
                  "mirrored trains it on all local GPUs (several hosts: keras-tuner's "
                  "chief/worker mode, one worker per host).")
recipe_flags.define(eval_split="val", epochs=5)
flags.mark_flag_as_required("space")


def choices_from_flags():
    numbers = recipe_flags.numbers
    choices = {
        "alpha": numbers("alpha", FLAGS.alpha, int),
        "beta": numbers("beta", FLAGS.beta, int),
        "merge": FLAGS.merge,
        "levels": numbers("levels", FLAGS.levels, int),
        "pool": FLAGS.pool,
        "upsample": FLAGS.upsample,
        "block": FLAGS.block,
        "width": FLAGS.widths,
        "resolution": numbers("resolutions", FLAGS.resolutions, int),
    }
    return {k: v for k, v in choices.items() if v is not None}


def main(argv):
    del argv
    import tuner
    from bl_keras.training import trainer

    try:
        model_kwargs = json.loads(FLAGS.model_kwargs) if FLAGS.model_kwargs else {}
    except json.JSONDecodeError as e:
        raise app.UsageError(f"--model_kwargs must be JSON, got {FLAGS.model_kwargs!r}: "
                             f"{e}") from None
    if FLAGS.space != "width_resolution" and FLAGS.model is None:
        raise app.UsageError(f"--space={FLAGS.space} needs --model")
    recipe = trainer.TrainConfig(model=FLAGS.model, model_dir="", model_kwargs=model_kwargs,
                                 strategy=FLAGS.strategy, **recipe_flags.recipe_kwargs())
    try:
        space = tuner.make_space(FLAGS.space, recipe, model_path=FLAGS.model_path,
                                 choices=choices_from_flags(), directory=FLAGS.directory,
                                 project_name=FLAGS.project_name or FLAGS.space,
                                 fine_tune_epochs=FLAGS.fine_tune_epochs)
        budget = tuner.Budget(FLAGS.budget_macs, FLAGS.budget_latency_ms)
        tuner.search(space, budget=budget, oracle=FLAGS.oracle, max_trials=FLAGS.max_trials,
                     seed=FLAGS.search_seed if FLAGS.search_seed is not None else FLAGS.seed,
                     directory=FLAGS.directory, project_name=FLAGS.project_name,
                     output=FLAGS.output)
    except ValueError as e:  # bad input: one clear line, before any training
        raise app.UsageError(str(e)) from None


if __name__ == "__main__":
    app.run(main)
