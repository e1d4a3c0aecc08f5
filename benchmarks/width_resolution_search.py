"""The width x resolution search against the exhaustive query table (tuner issue): with a
Bayesian oracle and at most a third of the grid's evaluations, does `tuner.search` find the
best configuration under a MACs budget that MutualNet's query table finds (or one at most one
validation image in 200 worse)?

    python benchmarks/width_resolution_search.py --output_dir=/tmp/wr_search  # ~10 min, 2 cores
    python benchmarks/width_resolution_search.py --model_path=runs/mutual/model.keras
    python benchmarks/width_resolution_search.py --smoke --output_dir=/tmp/wr_smoke  # the test

1. Trains a MutualNet (`apps.train --mutual_learning`'s trainer) on the bundled digits at
   --resolutions (the digits are 8x8 images: 16 px and below, as benchmarks/mutualnet.py),
   unless --model_path is given.
2. The exhaustive query table (`bl_keras.query_table.query_table`) of every width
   (--widths) x resolution on the validation split.
3. For every budget (--budgets, fractions of the full network's MACs) and seed (--seeds): a
   `tuner.search` of the `width_resolution` space with the Bayesian oracle and
   `max_trials` = a third of the grid; the configuration it picks is compared with the query
   table's `best_config` under the same budget, in validation images.
Written to --output_dir: tuner_benchmark.json, and the plot of the first search with the query
table's curve beside it.
"""

import json
import os
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "/tmp/tuner_benchmark", "Where the JSON, plots and runs go.")
flags.DEFINE_string("model_path", None, "A trained slimmable model (default: train one).")
flags.DEFINE_string("model", "us_resnet20_cifar", "Slimmable model to train.")
flags.DEFINE_list("resolutions", ["16", "14", "12", "10"], "Resolutions (training and grid).")
flags.DEFINE_string("widths", "0.25:1.0:0.05", "Grid widths: MIN:MAX:STEP or a list.")
flags.DEFINE_integer("epochs", 12, "Training epochs of the MutualNet.")
flags.DEFINE_integer("batch_size", 32, "Training batch size.")
flags.DEFINE_float("lr", 0.2, "Peak learning rate (as given, not scaled).")
flags.DEFINE_integer("calibration_images", 512, "BatchNorm post-statistics images per "
                     "configuration.")
flags.DEFINE_list("budgets", ["0.2", "0.35", "0.5", "0.75"], "MACs budgets, fractions of the "
                  "full width at the largest resolution.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Search seeds.")
flags.DEFINE_bool("smoke", False, "Tiny settings: a few steps, a 2 x 2 grid searched whole, "
                  "one budget and seed (the test).")


def _settings():
    if FLAGS.smoke:
        return dict(resolutions=[16, 12], widths="0.25,1.0", epochs=1, budgets=[0.75],
                    seeds=[0], steps=3, calibration=64)
    return dict(resolutions=[int(r) for r in FLAGS.resolutions], widths=FLAGS.widths,
                epochs=FLAGS.epochs, budgets=[float(b) for b in FLAGS.budgets],
                seeds=[int(s) for s in FLAGS.seeds], steps=None,
                calibration=FLAGS.calibration_images)


def _recipe(settings, model_dir=""):
    from bl_keras.training import trainer

    resolutions = settings["resolutions"]
    return trainer.TrainConfig(
        model=FLAGS.model, model_dir=model_dir, dataset="digits", epochs=settings["epochs"],
        batch_size=FLAGS.batch_size, image_size=max(resolutions), lr=FLAGS.lr, scale_lr=False,
        warmup_epochs=min(1, settings["epochs"]) * 0.5, mutual_learning=True,
        resolutions=tuple(resolutions), steps_per_epoch=settings["steps"], seed=0,
        eval_split="val", num_calibration_images=settings["calibration"], verbose=2)


def train(settings):
    from bl_keras.training import trainer

    model_dir = os.path.join(FLAGS.output_dir, "mutualnet")
    start = time.perf_counter()
    metrics = trainer.train(_recipe(settings, model_dir))
    print(f"trained {FLAGS.model} (MutualNet, resolutions {settings['resolutions']}) in "
          f"{time.perf_counter() - start:.0f} s: full width val top-1 "
          f"{100 * metrics['top1']:.1f}%", flush=True)
    return os.path.join(model_dir, "model.keras")


def _key(values):
    return (round(values["width"], 6), values["resolution"])


def main(argv):
    del argv
    import tuner
    from bl_keras import benchmark, query_table
    from pipelines.digits import load_digits_split

    settings = _settings()
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    model_path = FLAGS.model_path or train(settings)
    recipe = _recipe(settings)
    space = tuner.make_space("width_resolution", recipe, model_path=model_path, choices={
        "width": settings["widths"], "resolution": settings["resolutions"]})
    grid = len(space.candidates())
    start = time.perf_counter()
    table = query_table.query_table(
        space.model, "digits", widths=space.choices["width"],
        resolutions=space.choices["resolution"], split="val", batch_size=recipe.batch_size,
        num_calibration_images=settings["calibration"], latency=False, seed=0)
    table_seconds = time.perf_counter() - start
    by_config = {(r["width"], r["resolution"]): r for r in table}
    val_images = len(load_digits_split("val")[1])
    full = max(r["macs"] for r in table)
    # A third of the grid; the smoke run's 2 x 2 grid is searched whole (the test then knows
    # the answer: the query table's best).
    max_trials = grid if FLAGS.smoke else max(1, grid // 3)
    runs = []
    for fraction in settings["budgets"]:
        budget = tuner.Budget(max_macs=fraction * full)
        target = query_table.best_config(table, max_macs=budget.max_macs)
        for seed in settings["seeds"]:
            start = time.perf_counter()
            made = tuner.search(space, budget=budget, oracle="bayesian", max_trials=max_trials,
                                seed=seed, directory=os.path.join(FLAGS.output_dir, "search"),
                                project_name=f"budget{fraction:g}_seed{seed}", progress=False)
            found = by_config[_key(made["best"]["hyperparameters"])]
            gap = round((target["top1"] - found["top1"]) * val_images)
            runs.append({
                "budget_fraction": fraction, "budget_macs": budget.max_macs, "seed": seed,
                "trials": len(made["trials"]),
                "feasible": sum(r["macs"] <= budget.max_macs for r in table),
                "query_table_best": target, "search_best": found,
                "search_val_top1": made["best"]["val_top1"], "gap_images": gap,
                "ok": found["top1"] >= target["top1"] - 1 / 200 - 1e-9,
                "seconds": time.perf_counter() - start, "result": made["directory"]})
    print(f"\n## Width x resolution search vs the exhaustive query table: {FLAGS.model} "
          f"(MutualNet) on digits, grid {len(space.choices['width'])} widths x "
          f"{len(space.choices['resolution'])} resolutions = {grid} configurations, Bayesian "
          f"oracle with at most {max_trials} trials; top-1 on the {val_images} validation "
          f"images (query table: {table_seconds:.0f} s)\n")
    print(benchmark.format_table(
        ["budget (x full)", "MMACs", "seed", "trials", "feasible", "query table's best",
         "search's best", "gap (val images)", "within 1/200"],
        [[f"{r['budget_fraction']:g}", f"{r['budget_macs'] / 1e6:.2f}", r["seed"],
          r["trials"], r["feasible"],
          f"{r['query_table_best']['width']:g}x@{r['query_table_best']['resolution']} "
          f"{100 * r['query_table_best']['top1']:.1f}%",
          f"{r['search_best']['width']:g}x@{r['search_best']['resolution']} "
          f"{100 * r['search_best']['top1']:.1f}%", r["gap_images"],
          "yes" if r["ok"] else "NO"] for r in runs]))
    ok = sum(r["ok"] for r in runs)
    print(f"\nwithin one validation image in 200 of the query table's best: {ok} of "
          f"{len(runs)} searches")
    first = tuner.load_result(os.path.join(runs[0]["result"], "result.json"))
    first["query_table"] = table  # the exhaustive table beside the search's trials
    plot = tuner.write_result(first, os.path.join(FLAGS.output_dir, "search_vs_table.json"))[2]
    with open(os.path.join(FLAGS.output_dir, "tuner_benchmark.json"), "w") as f:
        json.dump({"smoke": FLAGS.smoke, "model_path": model_path, "grid": grid,
                   "max_trials": max_trials, "val_images": val_images, "table": table,
                   "runs": runs, "within": ok}, f, indent=2)
    print(f"written: {os.path.join(FLAGS.output_dir, 'tuner_benchmark.json')}, {plot}")


if __name__ == "__main__":
    app.run(main)
