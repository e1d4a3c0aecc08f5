"""Seed 002 (multi-resolution convolution): Table 1 / Table 3 experiments and CPU speed checks.

    python benchmarks/multires.py                         # digits at 32x32, width 16, then speed
    python benchmarks/multires.py --nospeed --rows=nopool,learned,thr0.1 --epochs=5
    python benchmarks/multires.py --noexperiments --repeats=20    # speed only (~2-3 min)

EXPERIMENTS: each row trains with `trainer.train(TrainConfig(...))` in its own model_dir under
--workdir and prints its accuracy and GMACs beside the paper's (Table 1: 10 layers; Table 3:
learned depth). Rows: nopool, predefined, uniform (scale invariant), learned (alternating
search, arch_split of each class held out as D_b), thr0.1, thr0.2, onelevel (`prune` of the
learned model, then fine-tuned with `init_model`), depth10, depth20 (learned depth, searched).
Every row trains a registered model by name at `filters=--width` (64 is the paper's).

On CIFAR-10 with a GPU (the paper: 400 epochs, SGD with cosine decay; 40k/10k split):

    python benchmarks/multires.py --dataset=cifar10 --data_dir=DATA --width=64 --epochs=400 \\
        --batch_size=128 --lr=0.1 --workdir=/tmp/multires_cifar --nospeed
    python benchmarks/multires.py --dataset=cifar10 --data_dir=DATA --width=64 --epochs=400 \\
        --rows=depth10,depth20 --workdir=/tmp/multires_cifar --nospeed

SPEED (every runtime of `bl_keras.timing`, batch 16 and 1, all models in one interleaved run):
(i) the one-level pruned model (`prune(keep_best=True)` of multires_10x64 with
`benchmark.example_mixing`) against the same network written with plain Keras layers (target:
latency within 10%); (ii) the 4-level multires_10x64 against multires_10x64_nopool: time per
MAC at batch 16 (target: within 1.3x), with a breakdown by level (1, 2, 3, 4 active levels).
"""

import dataclasses
import json
import os

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_bool("experiments", True, "Train the rows of Tables 1 and 3.")
flags.DEFINE_bool("speed", True, "Time the pruned / hand-written and 4-level / no-pool models.")
flags.DEFINE_string("dataset", "digits", "pipelines data set spec.")
flags.DEFINE_string("data_dir", None, "Where cifar10 etc. are prepared.")
flags.DEFINE_integer("image_size", 32, "Input size.")
flags.DEFINE_list("rows", None, "Experiment rows (default all): see ROWS.")
flags.DEFINE_integer("epochs", 3, "Epochs per row (the fine-tuning rows too).")
flags.DEFINE_integer("width", 16, "Channels per layer (the paper: 64).")
flags.DEFINE_integer("batch_size", 64, "Global batch size.")
flags.DEFINE_float("lr", 0.1, "Peak SGD learning rate at batch 256.")
flags.DEFINE_integer("steps_per_epoch", None, "Cap on the steps of an epoch (smoke runs).")
flags.DEFINE_string("workdir", "/tmp/multires_benchmark", "One model_dir per row under it.")
flags.DEFINE_integer("seed", 0, "Random seed of every row.")
flags.DEFINE_list("runtimes", ["graph", "xla", "tflite"], "Runtimes to time.")
flags.DEFINE_integer("repeats", 20, "Timed runs at batch 16.")
flags.DEFINE_integer("latency_repeats", 50, "Timed runs at batch 1.")
flags.DEFINE_bool("breakdown", True, "Speed: also time multires_10x64 with 1, 2, 3 levels.")


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    label: str  # the paper's row
    table: str
    model: str | None  # registered name trained from scratch (None: pruned from `learned`)
    paper_accuracy: float
    paper_gmacs: float | None
    search: str = "none"
    prune: dict | None = None
    paper_depth: int | None = None


def _rows():
    return (
        Row("nopool", "No Pooling", "1", "multires_10x64_nopool", 87.3, 0.31),
        Row("predefined", "Predefined Pooling", "1", "multires_10x64_predefined", 90.0, 0.26),
        Row("uniform", "Scale Invariant", "1", "multires_10x64_uniform", 89.2, 0.41),
        Row("learned", "Our Model", "1", "multires_10x64", 92.5, 0.41, "alternating"),
        Row("thr0.1", "Our Model (thr 0.1)", "1", None, 92.5, 0.29, prune={"threshold": 0.1}),
        Row("thr0.2", "Our Model (thr 0.2)", "1", None, 92.3, 0.27, prune={"threshold": 0.2}),
        Row("onelevel", "Our Model (one res.)", "1", None, 91.1, 0.26,
            prune={"keep_best": True}),
        Row("depth10", "Learning Depth, D=10", "3", "multires_10x64_depth", 92.0, None,
            "alternating", paper_depth=8),
        Row("depth20", "Learning Depth, D=20", "3", "multires_20x64_depth", 91.5, None,
            "alternating", paper_depth=9),
    )


def _config(row, model_dir, model=None, init_model=None):
    from bl_keras.training import trainer

    return trainer.TrainConfig(
        model=model, model_dir=model_dir, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, image_size=FLAGS.image_size,
        lr=FLAGS.lr, seed=FLAGS.seed, steps_per_epoch=FLAGS.steps_per_epoch, verbose=2,
        init_model=init_model, search=row.search,
        model_kwargs={"filters": FLAGS.width} if model else {})


def run_row(row, rows_by_key, done):
    """Trains one row in --workdir/<key>; returns its metrics (with 'learned_depth')."""
    import keras

    from bl_keras import multires
    from bl_keras.training import trainer

    model_dir = os.path.join(FLAGS.workdir, row.key)
    os.makedirs(model_dir, exist_ok=True)
    if row.prune is not None:
        source = os.path.join(FLAGS.workdir, "learned", "model.keras")
        if not os.path.exists(source):
            done["learned"] = run_row(rows_by_key["learned"], rows_by_key, done)
        pruned = multires.prune(keras.models.load_model(source, compile=False), **row.prune)
        init = os.path.join(model_dir, "init.keras")
        pruned.save(init)
        config = _config(row, model_dir, init_model=init)
    else:
        config = _config(row, model_dir, model=row.model)
    metrics = trainer.train(config)
    if row.paper_depth is not None:
        trained = keras.models.load_model(os.path.join(model_dir, "model.keras"), compile=False)
        metrics["learned_depth"] = multires.learned_depth(trained)
    with open(os.path.join(model_dir, "row.json"), "w") as f:
        json.dump({"row": row.key, **metrics}, f, indent=2)
    return metrics


def experiments_table(results, rows):
    from bl_keras.benchmark import format_table

    headers = ["table", "row", "ours: top-1 (%)", "paper acc. (CIFAR-10)", "ours: GMACs",
               "paper GMACs", "ours: LD", "paper LD", "model_dir"]
    body = []
    for row in rows:
        m = results[row.key]
        if "error" in m:
            body.append([row.table, row.label, "failed: " + m["error"], f"{row.paper_accuracy:.1f}",
                         "", "" if row.paper_gmacs is None else f"{row.paper_gmacs:.2f}", "",
                         "" if row.paper_depth is None else str(row.paper_depth), ""])
            continue
        body.append([row.table, row.label, f"{100 * m['top1']:.1f}", f"{row.paper_accuracy:.1f}",
                     f"{m['macs'] / 1e9:.4f}",
                     "" if row.paper_gmacs is None else f"{row.paper_gmacs:.2f}",
                     "" if m.get("learned_depth") is None else str(m["learned_depth"]),
                     "" if row.paper_depth is None else str(row.paper_depth),
                     os.path.join(FLAGS.workdir, row.key)])
    return format_table(headers, body)


def experiments():
    rows = _rows()
    by_key = {r.key: r for r in rows}
    selected = FLAGS.rows or [r.key for r in rows]
    unknown = sorted(set(selected) - set(by_key))
    if unknown:
        raise app.UsageError(f"unknown rows {unknown}; known: {list(by_key)}")
    chosen = [by_key[k] for k in selected]
    results = {}
    for row in chosen:
        if row.key in results:
            continue
        try:
            results[row.key] = run_row(row, by_key, results)
        except Exception as error:  # noqa: BLE001  (report the row, go on with the others)
            message = f"{type(error).__name__}: {error}".splitlines()[0][:120]
            print(f"row {row.key} failed: {message}", flush=True)
            results[row.key] = {"error": message}
    chosen = [r for r in rows if r.key in results]  # with `learned` where pruned rows needed it
    print(f"\n## Tables 1 and 3 on {FLAGS.dataset} at {FLAGS.image_size}x{FLAGS.image_size}, "
          f"width {FLAGS.width}, {FLAGS.epochs} epochs (the paper: CIFAR-10, width 64, 400 "
          "epochs; GMACs scale with width^2)\n")
    print(experiments_table(results, chosen), "\n", flush=True)
    return results


# ---------------------------------------------------------------------------------------------
# Speed.


def hand_written(levels, filters=64, classes=10, size=32, name="hand_written"):
    """The one-level CNN of `levels` (one per layer) with plain Keras layers only."""
    import keras
    from keras import layers

    from bl_keras.layers.multires import BN_EPSILON, BN_MOMENTUM

    x = inputs = keras.Input((size, size, 3), name="image")
    level = 0
    for index, target in enumerate(levels, 1):
        if target > level:
            x = layers.MaxPooling2D(2 ** (target - level), name=f"pool{index}")(x)
        elif target < level:
            x = layers.UpSampling2D(2 ** (level - target), name=f"up{index}")(x)
        level = target
        width = classes if index == len(levels) else filters
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{index}")(x)
        x = layers.ReLU(name=f"relu{index}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, center=False,
                                      scale=False, name=f"bn{index}")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Activation("softmax", name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def _copy_by_order(source, target):
    """Copies conv kernels and BN statistics in call order (same architecture)."""
    from keras import layers

    def weighted(model, kind):
        return [layer for layer in model._flatten_layers(include_self=False)
                if isinstance(layer, kind)]

    for kind in (layers.Conv2D, layers.BatchNormalization):
        for src, dst in zip(weighted(source, kind), weighted(target, kind), strict=True):
            dst.set_weights(src.get_weights())


def speed_models(breakdown=True):
    import numpy as np

    from bl_keras import benchmark, models, multires

    kwargs = {"include_preprocessing": False}
    full = benchmark.example_mixing(models.get("multires_10x64", **kwargs))
    pruned = multires.prune(full, keep_best=True)
    levels = [v[0] for v in multires.kept_levels(full, keep_best=True).values()]
    hand = hand_written(levels)
    _copy_by_order(pruned, hand)
    x = np.random.default_rng(0).uniform(-2, 2, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(hand(x, training=False), pruned(x, training=False), atol=1e-5)
    built = {"pruned_one_level": pruned, "hand_written": hand, "multires_10x64": full,
             "multires_10x64_nopool": models.get("multires_10x64_nopool", **kwargs)}
    if breakdown:
        from bl_keras.models.multires import multires_cifar

        for count in (2, 3):
            built[f"levels_0-{count - 1}"] = multires_cifar(
                10, 64, active=[list(range(count))] * 10, name=f"levels_{count}", **kwargs)
    return built, levels


def speed():
    from bl_keras import profile, timing
    from bl_keras.benchmark import format_table

    built, levels = speed_models(FLAGS.breakdown)
    macs = {name: profile.count_macs(m) for name, m in built.items()}
    timings = timing.measure(built, runtimes=FLAGS.runtimes, batches=(16, 1),
                             repeats=FLAGS.repeats, latency_repeats=FLAGS.latency_repeats)
    by_key = {(t.model, t.runtime, t.batch): t for t in timings}
    print(f"\n## CPU speed at 32x32 (median of {FLAGS.repeats} runs at batch 16, "
          f"{FLAGS.latency_repeats} at batch 1; runs interleaved). One-level levels: "
          f"{','.join(map(str, levels))}\n")
    headers = ["model", "GMACs", *(f"{r} b{b} ms" for r in FLAGS.runtimes for b in (16, 1)),
               "best b16 ms", "best b1 ms", "b16 ns/MAC"]
    body = []
    for name in built:
        b16, b1 = timing.best(timings, name, 16), timing.best(timings, name, 1)
        body.append([name, f"{macs[name] / 1e9:.3f}",
                     *(f"{by_key[name, r, b].seconds * 1e3:.2f}" for r in FLAGS.runtimes
                       for b in (16, 1)),
                     f"{b16.seconds * 1e3:.2f} ({b16.runtime})",
                     f"{b1.seconds * 1e3:.2f} ({b1.runtime})",
                     f"{b16.seconds / (16 * macs[name]) * 1e9:.3f}"])
    print(format_table(headers, body), "\n")

    def best(name, batch):
        return timing.best(timings, name, batch).seconds

    ratios = {
        "pruned_vs_hand_b1": best("pruned_one_level", 1) / best("hand_written", 1),
        "pruned_vs_hand_b16": best("pruned_one_level", 16) / best("hand_written", 16),
        "full_vs_nopool_time_per_mac_b16": (best("multires_10x64", 16) / macs["multires_10x64"])
        / (best("multires_10x64_nopool", 16) / macs["multires_10x64_nopool"]),
        "full_vs_nopool_time_per_mac_b1": (best("multires_10x64", 1) / macs["multires_10x64"])
        / (best("multires_10x64_nopool", 1) / macs["multires_10x64_nopool"]),
    }
    print(format_table(["ratio (best runtime of each)", "measured", "target"], [
        ["(i) pruned one-level / hand-written, latency batch 1",
         f"{ratios['pruned_vs_hand_b1']:.3f}x", "<= 1.10x"],
        ["(i) pruned one-level / hand-written, batch 16",
         f"{ratios['pruned_vs_hand_b16']:.3f}x", ""],
        ["(ii) 4-level / no-pool time per MAC, batch 16",
         f"{ratios['full_vs_nopool_time_per_mac_b16']:.3f}x", "<= 1.30x"],
        ["(ii) 4-level / no-pool time per MAC, batch 1",
         f"{ratios['full_vs_nopool_time_per_mac_b1']:.3f}x", ""],
    ]), "\n", flush=True)
    return timings, ratios


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # TFLite conversion's SavedModel chatter
    if FLAGS.experiments:
        experiments()
    if FLAGS.speed:
        speed()


if __name__ == "__main__":
    app.run(main)
