"""The end-to-end demo behind `make demo`: the three papers on the bundled digits, in one run.

1. Big-Little Net (seed 000/001): bL-ResNet-20 against ResNet-20 at 32x32, their int8 TFLite
   parity, accuracy against MACs.
2. Multi-resolution convolution (seed 002): a short alternating search of a small
   multi-resolution CNN, its mixing weights as a heat map, pruned (threshold 0.1) and
   fine-tuned.
3. MutualNet (seed 003): a slimmable ResNet-20 trained by mutual learning at three
   resolutions, its query table on a few widths and the configuration it picks for a budget.
4. A budgeted search (`tuner`) of bL-ResNet-20's alpha and beta.

Every part writes under its own folder of `workdir`, prints its own table and returns rows
of the one summary table (`summary`). Run again, each part continues where it stopped
(finished trainings and trials are kept).
"""

import dataclasses
import os
import time

from bl_keras import benchmark

DEMO_MODELS = ("resnet20_cifar", "bl_resnet20_cifar")
MULTIRES_MODEL = "multires_10x64"  # at depth 6, width 16 (Settings.multires_kwargs)
MUTUAL_MODEL = "us_resnet20_cifar"
PARTS = ("big_little", "multi_resolution", "mutualnet", "bl_search")


@dataclasses.dataclass(frozen=True)
class Settings:
    """How long each part trains. The defaults take about 9 minutes on 2 cores."""

    epochs: int = 8  # the Big-Little pair
    image_size: int = 32  # Big-Little, multi-resolution and the search
    multires_epochs: int = 6  # the alternating search ...
    multires_fine_tune_epochs: int = 2  # ... and the pruned model's fine-tune
    multires_kwargs: tuple = (("depth", 6), ("filters", 16))
    mutual_epochs: int = 10
    resolutions: tuple = (16, 12, 8)  # MutualNet (the digits are 8x8 images)
    query_widths: tuple = (0.25, 0.5, 0.75, 1.0)
    mutual_budget: float = 0.5  # of the full network's MACs: the query table's pick under it
    search_trials: int = 3
    search_epochs: int = 3
    search_budget: float = 0.7  # of ResNet-20's MACs
    steps_per_epoch: int | None = None  # None: the whole training split
    calibration_images: int = 200  # int8 TFLite and BatchNorm post-statistics
    latency: bool = True  # time the Big-Little pair at batch 1 (TF graph and TFLite)
    jit_compile: bool = True  # XLA: repays its compile time over whole epochs, not 3 steps
    seed: int = 0


SMOKE = Settings(epochs=1, multires_epochs=1, multires_fine_tune_epochs=1, mutual_epochs=1,
                 resolutions=(16, 8), query_widths=(0.25, 1.0), search_trials=2,
                 search_epochs=1, steps_per_epoch=2, calibration_images=32, latency=False,
                 jit_compile=False)


def _config(model, model_dir, settings, epochs, **changes):
    from bl_keras.training import trainer

    values = dict(model=model, model_dir=model_dir, dataset="digits", epochs=epochs,
                  batch_size=64, image_size=settings.image_size, lr=0.8,
                  warmup_epochs=min(1.0, epochs / 2),
                  jit_compile=settings.jit_compile or "auto", seed=settings.seed, verbose=2,
                  steps_per_epoch=settings.steps_per_epoch)
    return trainer.TrainConfig(**{**values, **changes})


def _row(part, network, top1, macs, versus="", files=""):
    return {"part": part, "network": network, "top1": top1, "macs": macs, "versus": versus,
            "files": files}


def _rate(value):
    return "-" if value is None else f"{value:.0f}"  # None: resumed a finished run


def _ms(value):
    return "-" if value is None else f"{value:.2f}"


def _heading(text):
    print(f"\n## {text}\n", flush=True)


def big_little(workdir, settings):
    """Part 1: ResNet-20 and bL-ResNet-20 trained, compared, the bL model exported to int8
    TFLite with a parity check, and accuracy against MACs plotted."""
    import keras
    import numpy as np

    import pipelines
    from bl_keras import evaluation, export, plots
    from bl_keras.training import trainer

    _heading("1. Big-Little Net: bL-ResNet-20 against ResNet-20")
    rows = []
    for name in DEMO_MODELS:
        config = _config(name, os.path.join(workdir, name), settings, settings.epochs)
        metrics = trainer.train(config)
        model = keras.models.load_model(os.path.join(config.model_dir, "model.keras"))
        for key, runtime in (("latency_ms", "graph"), ("latency_ms_tflite", "tflite")):
            metrics[key] = (evaluation.latency_ms(model, config.image_size, runtime)
                            if settings.latency else None)
        rows.append(metrics)
    print(f"\nDigits (1,797 real 8x8 images at {settings.image_size}x{settings.image_size}), "
          "test split\n")
    print(benchmark.format_table(
        ["model", "test top-1", "MMACs", "params", "batch-1 ms, TF graph", "batch-1 ms, TFLite",
         "train img/s"],
        [[r["model"], f"{100 * r['top1']:.1f}%", f"{r['macs'] / 1e6:.1f}", f"{r['params']:,}",
          _ms(r["latency_ms"]), _ms(r["latency_ms_tflite"]),
          _rate(r["train_images_per_second"])] for r in rows]))
    baseline, bl = rows
    print(f"\nMAC saving of {bl['model']}: {baseline['macs'] / bl['macs']:.2f}x")

    model = keras.models.load_model(os.path.join(workdir, bl["model"], "model.keras"))
    size = settings.image_size
    calibration = export.take_images(pipelines.get_dataset(
        "digits", "train", size, 50, training=False), settings.calibration_images)
    test = np.concatenate([x.numpy() for x, _ in pipelines.get_dataset(
        "digits", "test", size, 100, training=False)])
    flatbuffer = export.to_tflite(model, quantize="int8", representative_images=calibration)
    tflite = os.path.join(workdir, f"{bl['model']}_int8.tflite")
    with open(tflite, "wb") as f:
        f.write(flatbuffer)
    parity = export.parity(model, flatbuffer, test)
    print(f"int8 TFLite {tflite} ({len(flatbuffer) / 1024:.0f} KiB): top-1 agreement with Keras "
          f"{100 * parity['top1_agreement']:.1f}% on {parity['count']} test images, max abs "
          f"diff {parity['max_abs_diff']:.4f}")
    plot = plots.accuracy_vs_macs(rows, os.path.join(workdir, "accuracy_vs_macs.png"),
                                  title="Digits 32x32: accuracy against compute")
    print(f"plot: {plot}")
    return [
        _row("Big-Little", baseline["model"], baseline["top1"], baseline["macs"], "baseline",
             os.path.join(workdir, baseline["model"])),
        _row("Big-Little", bl["model"], bl["top1"], bl["macs"],
             f"{baseline['macs'] / bl['macs']:.2f}x fewer MACs than {baseline['model']}",
             f"{plot}, {tflite}")]


def multi_resolution(workdir, settings):
    """Part 2: the alternating search (network weights on D_a, mixing weights on D_b), the
    mixing heat map, the prune at the paper's threshold 0.1 and a short fine-tune."""
    import keras

    from bl_keras import multires, profile
    from bl_keras.training import trainer

    kwargs = dict(settings.multires_kwargs)
    name = f"multires {kwargs['depth']}x{kwargs['filters']}"
    _heading(f"2. Multi-resolution convolution: {name}, alternating search, prune, fine-tune")
    root = os.path.join(workdir, "multires")
    search_dir = os.path.join(root, "search")
    searched_metrics = trainer.train(_config(
        MULTIRES_MODEL, search_dir, settings, settings.multires_epochs, search="alternating",
        model_kwargs=kwargs, lr=0.1, warmup_epochs=0, arch_lr=0.05))
    searched = keras.models.load_model(os.path.join(search_dir, "model.keras"), compile=False)
    heat_map = multires.plot_mixing(searched, os.path.join(root, "mixing.png"),
                                    title=f"{name} on digits: softmax(alpha)")
    kept = multires.kept_levels(searched, threshold=0.1)
    pruned = multires.prune(searched, threshold=0.1)
    pruned_path = os.path.join(root, "pruned.keras")
    pruned.save(pruned_path)
    shape = (settings.image_size, settings.image_size, 3)
    print(f"\nmixing weights: {heat_map}\nlevels kept at threshold 0.1 (0 = full resolution): "
          + ", ".join(f"{layer} {list(levels)}" for layer, levels in kept.items()))
    print(f"pruned: {profile.count_macs(pruned, shape) / 1e6:.2f} MMACs "
          f"(searched: {searched_metrics['macs'] / 1e6:.2f})")
    tuned = trainer.train(_config(
        None, os.path.join(root, "finetune"), settings, settings.multires_fine_tune_epochs,
        init_model=pruned_path, lr=0.05, warmup_epochs=0))
    saving = searched_metrics["macs"] / tuned["macs"]
    print(benchmark.format_table(
        ["model", "test top-1", "MMACs", "params"],
        [[f"{name}, all levels (searched)", f"{100 * searched_metrics['top1']:.1f}%",
          f"{searched_metrics['macs'] / 1e6:.2f}", f"{searched_metrics['params']:,}"],
         [f"{name}, pruned + fine-tuned", f"{100 * tuned['top1']:.1f}%",
          f"{tuned['macs'] / 1e6:.2f}", f"{tuned['params']:,}"]]))
    return [
        _row("Multi-resolution", f"{name}, searched", searched_metrics["top1"],
             searched_metrics["macs"], "all levels", search_dir),
        _row("Multi-resolution", f"{name}, pruned (thr 0.1)", tuned["top1"], tuned["macs"],
             f"{saving:.2f}x fewer MACs than searched",
             f"{heat_map}, {os.path.join(root, 'finetune')}")]


def mutualnet(workdir, settings):
    """Part 3: mutual learning of width and resolution, the query table on a few widths, and
    the configuration it picks under a MACs budget (chosen on the validation split, reported
    on the test split)."""
    import keras

    import bl_keras  # noqa: F401 (custom objects)
    from bl_keras import plots, query_table
    from bl_keras.training import trainer

    resolutions = tuple(sorted(settings.resolutions, reverse=True))
    _heading(f"3. MutualNet: {MUTUAL_MODEL} by mutual learning at {resolutions} px, its "
             "query table")
    model_dir = os.path.join(workdir, "mutualnet")
    metrics = trainer.train(_config(
        MUTUAL_MODEL, model_dir, settings, settings.mutual_epochs, batch_size=32,
        image_size=resolutions[0], lr=1.6, warmup_epochs=min(0.5, settings.mutual_epochs / 2),
        mutual_learning=True,
        resolutions=resolutions, eval_split="test", jit_compile="auto",
        num_calibration_images=settings.calibration_images * 2))
    model = keras.models.load_model(os.path.join(model_dir, "model.keras"))
    table = query_table.query_table(
        model, "digits", widths=settings.query_widths, resolutions=resolutions, split="val",
        batch_size=64, num_calibration_images=settings.calibration_images * 2, latency=False,
        seed=settings.seed, progress=False)
    print(benchmark.format_table(
        ["width", "resolution", "MMACs", "val top-1"],
        [[f"{r['width']:g}", r["resolution"], f"{r['macs'] / 1e6:.2f}",
          f"{100 * r['top1']:.1f}%"] for r in table]))
    full = max(table, key=lambda r: r["macs"])
    budget = settings.mutual_budget * full["macs"]
    pick = query_table.best_config(table, max_macs=budget)
    picked = query_table.query_table(
        model, "digits", widths=[pick["width"]], resolutions=[pick["resolution"]],
        split="test", batch_size=64, num_calibration_images=settings.calibration_images * 2,
        latency=False, seed=settings.seed, progress=False)[0]
    plot = plots.query_table_curve(table, os.path.join(workdir, "query_table.png"),
                                   title=f"{MUTUAL_MODEL} (MutualNet) on digits: query table")
    label = f"{pick['width']:g}x @ {pick['resolution']}px"
    print(f"\nbest under {settings.mutual_budget:g}x the full network's MACs "
          f"({budget / 1e6:.2f} MMACs): {label}, val top-1 {100 * pick['top1']:.1f}%, test "
          f"top-1 {100 * picked['top1']:.1f}%\nplot: {plot}")
    return [
        _row("MutualNet", f"{MUTUAL_MODEL} 1.0x @ {resolutions[0]}px", metrics["top1"],
             full["macs"], "full network", model_dir),
        _row("MutualNet", f"{MUTUAL_MODEL} {label}", picked["top1"], picked["macs"],
             f"the query table's pick under {settings.mutual_budget:g}x its MACs", plot)]


def bl_search(workdir, settings):
    """Part 4: a Bayesian search of bL-ResNet-20's alpha and beta under a MACs budget (a
    fraction of ResNet-20's), every configuration over it never trained."""
    import tuner
    from bl_keras import models, profile

    shape = (settings.image_size, settings.image_size, 3)
    baseline = profile.count_macs(models.get(DEMO_MODELS[0], classes=10, input_shape=shape),
                                  shape)
    budget = tuner.Budget(max_macs=settings.search_budget * baseline)
    _heading(f"4. Budgeted search: alpha and beta of bL-ResNet-20 under {budget.describe()} "
             f"({settings.search_budget:g}x ResNet-20)")
    recipe = _config("bl_resnet20_cifar", "", settings, settings.search_epochs,
                     batch_size=32, eval_split="val", verbose=0)
    space = tuner.make_space("bl", recipe, choices={"alpha": (1, 2, 4), "beta": (1, 2, 3)})
    made = tuner.search(space, budget=budget, oracle="bayesian",
                        max_trials=settings.search_trials, seed=settings.seed,
                        directory=os.path.join(workdir, "search"), project_name="bl",
                        output=os.path.join(workdir, "search", "result.json"))
    best = made["best"]
    if best is None:
        return [_row("bL search", "no trial completed", None, None, made.get("message") or "")]
    values = best["hyperparameters"]
    return [_row("bL search", f"bl_resnet20_cifar alpha={values['alpha']} beta={values['beta']}",
                 best.get("test_top1"), best["macs"],
                 f"best of {len(made['trials'])} trials, val top-1 "
                 f"{100 * best['val_top1']:.1f}%",
                 os.path.join(workdir, "search", "result.png"))]


def summary(rows):
    """The one table of the whole demo: a row per network."""
    def percent(value):
        return "-" if value is None else f"{100 * value:.1f}%"

    def mmacs(value):
        return "-" if value is None else f"{value / 1e6:.2f}"

    return benchmark.format_table(
        ["part", "network", "test top-1", "MMACs", "compared", "files"],
        [[r["part"], r["network"], percent(r["top1"]), mmacs(r["macs"]), r["versus"],
          r["files"]] for r in rows])


RUNNERS = {"big_little": big_little, "multi_resolution": multi_resolution,
           "mutualnet": mutualnet, "bl_search": bl_search}


def run(workdir, settings=Settings(), parts=PARTS):
    """Runs the `parts` in order, prints the summary table and writes it as `summary.json`.
    Returns the summary rows."""
    import json

    unknown = [p for p in parts if p not in RUNNERS]
    if unknown:
        raise ValueError(f"unknown demo parts {unknown}; known: {list(RUNNERS)}")
    os.makedirs(workdir, exist_ok=True)
    rows, minutes = [], {}
    for part in parts:
        start = time.perf_counter()
        rows.extend(RUNNERS[part](workdir, settings))
        minutes[part] = (time.perf_counter() - start) / 60
    _heading(f"Summary: the three papers on digits (files under {workdir})")
    print(summary(rows))
    print(f"\n{sum(minutes.values()):.1f} min in all: " + ", ".join(
        f"{part} {value:.1f}" for part, value in minutes.items()), flush=True)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(rows, f, indent=2)
    return rows
