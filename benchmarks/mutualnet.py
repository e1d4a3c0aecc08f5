"""Seed 003 (MutualNet, mutual learning of width and resolution): cost checks and the
accuracy-MACs experiment of its section 4.1 (Figs. 4 and 6) on a small data set.

    python benchmarks/mutualnet.py --output_dir=/tmp/mutualnet    # both parts (~10 min, 2 cores)
    python benchmarks/mutualnet.py --noexperiment                  # cost checks only (~2.5 min)
    python benchmarks/mutualnet.py --nocost --dataset=cifar10 --data_dir=DATA \
        --resolutions=32,24,16 --steps=20000 --batch_size=128 --lr=0.1
    python benchmarks/mutualnet.py --smoke --output_dir=/tmp/mn_smoke   # tiny (the test)

COST (every ratio from timings interleaved in one run; medians of --repeats, the best-of
ratio beside it):
  (a) One MutualNet training step (the graph path: a `tf.function` of
      `MutualLearning.train_step`, dynamic widths, the resolution chosen by `switch_case`)
      against the sum of its four sub-networks' forward + backward passes timed separately
      (the widths and resolutions that step draws, each a `tf.function` of a plain gradient
      step at a static width set by `slimmable.set_width`) plus one optimizer update
      (target <= 1.2x).
  (b) `subnetwork(us_mobilenet_v1(include_preprocessing=False), 1.0)` against
      `keras.applications.MobileNet(weights=None)`, both float32 TFLite (`export.to_tflite`),
      batch-1 LiteRT latency at 224 (target <= 1.05x); the TFLite op counts of both are printed
      where they differ.
  (c) Sub-network latency (TFLite, batch 1) over widths x resolutions of us_mobilenet_v1,
      with a check that it rises with width at every resolution and with resolution at every
      width.

EXPERIMENT (default: digits, us_resnet20_cifar, resolutions 16,12,8 (the digits are 8x8
images: larger sizes only upsample them, at 4x the cost for 32), widths 0.25-1.0, the same
number of training steps for every network, about 7.5 minutes on 2 cores):
  - MutualNet: `MutualLearning(resolutions=...)` (sandwich rule, inplace distillation, one
    resolution drawn per sub-network);
  - US-Net: the same step on one resolution (the largest), width only; queried at every
    resolution too (the paper's "US-Net+");
  - independent: one single-width network per width (`width_range=(w, w)`), trained at the
    largest resolution (or at every resolution with --independent_per_resolution).
  Each is then queried (`bl_keras.query_table.query_table`: BatchNorm post-statistics on the
  training split, top-1 on the validation split) and `best_config` picks a configuration per
  MACs budget. Written to --output_dir: mutualnet.json and mutualnet_accuracy_macs.png.
"""

import json
import os
import statistics
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_bool("cost", True, "Run the cost checks (a), (b), (c).")
flags.DEFINE_list("checks", ["step", "tflite", "latency"], "Cost checks to run: step (a), "
                  "tflite (b), latency (c).")
flags.DEFINE_integer("num_sampled", 2, "Random widths per MutualNet / US-Net step besides the "
                     "smallest and the largest (the paper: 2).")
flags.DEFINE_bool("experiment", True, "Train MutualNet, US-Net and independent networks.")
flags.DEFINE_string("output_dir", "/tmp/mutualnet_benchmark", "Where mutualnet.json and the "
                    "plot are written.")
flags.DEFINE_bool("smoke", False, "Tiny settings (a few steps, 16px, small latency table): "
                  "about a minute, for tests.")
flags.DEFINE_integer("seed", 0, "Seed of the weights, the data order and the width draws.")
flags.DEFINE_integer("num_threads", 1, "LiteRT threads for the latency checks (1: steadier "
                     "on a shared machine; 0: one per core).")
# (a) the training step.
flags.DEFINE_string("step_model", "us_resnet20_cifar", "Slimmable model of check (a) "
                    "(us_resnet20_cifar or us_mobilenet_v1, ...).")
flags.DEFINE_list("step_resolutions", ["32", "24", "16"], "Check (a): the step's resolutions.")
flags.DEFINE_integer("step_batch", 32, "Check (a): batch size.")
flags.DEFINE_integer("step_draws", 3, "Check (a): steps (width/resolution draws) timed.")
flags.DEFINE_integer("repeats", 15, "Check (a): timed runs of each function (interleaved).")
# (b), (c) latency.
flags.DEFINE_integer("latency_size", 224, "Check (b): input size.")
flags.DEFINE_integer("latency_repeats", 40, "Checks (b), (c): timed batch-1 runs (median).")
flags.DEFINE_integer("latency_rounds", 3, "Checks (b), (c): interleaved rounds (the median "
                     "of each round's medians is reported).")
flags.DEFINE_list("latency_widths", ["0.25", "0.5", "0.75", "1.0"], "Check (c): widths.")
flags.DEFINE_list("latency_resolutions", ["224", "160", "128"], "Check (c): resolutions.")
# The experiment.
flags.DEFINE_string("dataset", "digits", "pipelines data set spec.")
flags.DEFINE_string("data_dir", None, "Where cifar10 etc. are prepared.")
flags.DEFINE_string("model", "us_resnet20_cifar", "Slimmable model trained in the experiment.")
flags.DEFINE_list("resolutions", ["16", "12", "8"], "MutualNet's resolutions (the largest "
                  "also US-Net's and the independent networks').")
flags.DEFINE_string("widths", "0.25:1.0:0.125", "Query-table widths: MIN:MAX:STEP or a list.")
flags.DEFINE_list("independent_widths", ["0.25", "0.5", "0.75", "1.0"], "Widths of the "
                  "independently trained networks.")
flags.DEFINE_bool("independent_per_resolution", False, "Train one independent network per "
                  "(width, resolution) instead of per width at the largest resolution.")
flags.DEFINE_integer("steps", 400, "Training steps of every network.")
flags.DEFINE_integer("batch_size", 32, "Training batch size.")
flags.DEFINE_integer("query_batch_size", 128, "Batch size of the query tables' calibration "
                     "and evaluation.")
flags.DEFINE_float("lr", 0.2, "Peak SGD learning rate (cosine decay, 5% warm-up).")
flags.DEFINE_float("weight_decay", 5e-5, "Decoupled SGD weight decay (conv/dense kernels).")
flags.DEFINE_integer("calibration_images", 512, "BatchNorm post-statistics images per "
                     "configuration (the paper: 2,000).")
flags.DEFINE_list("budgets", ["0.1", "0.25", "0.5", "1.0"], "MACs budgets as fractions of "
                  "the full network's MACs at the largest resolution.")

SMOKE = {
    "step_resolutions": ["16", "12"], "step_batch": 4, "step_draws": 1, "repeats": 2,
    "latency_size": 32, "latency_repeats": 3, "latency_rounds": 1,
    "latency_widths": ["0.25", "1.0"], "latency_resolutions": ["32"],
    "resolutions": ["16", "12"], "widths": "0.25,1.0", "independent_widths": ["0.5"],
    "steps": 3, "num_sampled": 0, "batch_size": 16, "calibration_images": 32,
    "budgets": ["0.5", "1.0"],
}


def _ints(values):
    return tuple(int(v) for v in values)


def _floats(values):
    return tuple(float(v) for v in values)


def _table(headers, rows):
    from bl_keras.benchmark import format_table

    return format_table(headers, rows)


def _interleaved(functions, repeats, warmup=1):
    """Seconds of each named zero-argument function: `repeats` timed calls each, interleaved
    (the order rotates every round), after `warmup` untimed calls. Returns name -> list."""
    names = list(functions)
    for _ in range(warmup):
        for name in names:
            functions[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            functions[name]()
            times[name].append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------------------------------------
# (a) One MutualNet step against its four sub-networks.


def step_check():
    import keras
    import numpy as np
    import tensorflow as tf

    from bl_keras import models, slimmable
    from bl_keras.training.methods import per_example_loss_fn
    from bl_keras.training.slimmable import MutualLearning

    keras.utils.set_random_seed(FLAGS.seed)
    tf.get_logger().setLevel("ERROR")  # one tf.function per sub-network: "retracing" notes
    resolutions = _ints(FLAGS.step_resolutions)
    batch = FLAGS.step_batch
    classes = 10 if "cifar" in FLAGS.step_model else 1000
    model = models.get(FLAGS.step_model, classes=classes, input_shape=(None, None, 3))
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    method = MutualLearning(resolutions=resolutions, num_sampled=FLAGS.num_sampled,
                            seed=FLAGS.seed)
    method.build(model, optimizer)
    loss = per_example_loss_fn(keras.losses.SparseCategoricalCrossentropy())
    variables = model.trainable_variables
    rng = np.random.default_rng(FLAGS.seed)
    largest = max(resolutions)
    full = rng.uniform(0, 255, (batch, largest, largest, 3)).astype("float32")
    images = {r: tf.constant(full if r == largest else tf.image.resize(full, (r, r)).numpy())
              for r in resolutions}
    labels = tf.constant(rng.integers(0, classes, batch), tf.int32)
    mutual_batch = (tuple(images[r] for r in resolutions), labels)
    mutual = tf.function(lambda b: method.train_step(model, b, loss, replicas=1))

    # The sub-networks each timed step trains: (width, resolution), the full one first.
    low, high = method.width_range
    draws = {}
    for k in range(FLAGS.step_draws):
        widths, picks = (t.numpy() for t in method._draws(tf.constant(k, tf.int64)))
        draws[k] = [(high, largest)] + [
            (round(float(w), 6), resolutions[int(p)])
            for w, p in zip([low, *widths], picks)]

    plain = {}  # (width, resolution) -> a traced plain gradient step at that static width
    for subs in draws.values():
        for width, res in subs:
            if (width, res) in plain:
                continue
            slimmable.set_width(model, width)

            @tf.function
            def gradient_step(x, y):
                with tf.GradientTape() as tape:
                    out = model(x, training=True)
                    value = tf.reduce_mean(loss(y, out))
                return tape.gradient(value, variables)

            gradient_step(images[res], labels)  # traced now, at this width
            plain[width, res] = (gradient_step, images[res])
    slimmable.set_width(model, high)
    zero = [tf.zeros_like(v) for v in variables]
    apply = tf.function(lambda g: optimizer.apply_gradients(zip(g, variables)))

    def mutual_at(k):
        def run():
            optimizer.iterations.assign(k)  # the step draws from (seed, iterations)
            mutual(mutual_batch)
        return run

    functions = {f"step{k}": mutual_at(k) for k in draws}
    functions.update({f"sub {w:g}@{r}": (lambda f=f, x=x: f(x, labels))
                      for (w, r), (f, x) in plain.items()})
    functions["update"] = lambda: apply(zero)
    times = _interleaved(functions, FLAGS.repeats)
    median = {name: statistics.median(t) for name, t in times.items()}
    best = {name: min(t) for name, t in times.items()}
    results = []
    for k, subs in draws.items():
        names = [f"sub {w:g}@{r}" for w, r in subs] + ["update"]
        total, total_best = sum(median[n] for n in names), sum(best[n] for n in names)
        results.append({
            "draw": k,
            "sub_networks": [{"width": w, "resolution": r, "role": role,
                              "seconds": median[f"sub {w:g}@{r}"]}
                             for (w, r), role in zip(subs, ["full", "smallest", *["random"] * (
                                 len(subs) - 2)])],
            "update_seconds": median["update"],
            "sum_seconds": total,
            "step_seconds": median[f"step{k}"],
            "ratio": median[f"step{k}"] / total,
            "ratio_best_of": best[f"step{k}"] / total_best,
        })
    worst = max(r["ratio"] for r in results)
    overall = (sum(r["step_seconds"] for r in results) / sum(r["sum_seconds"] for r in results))
    print(f"\n## (a) MutualNet step vs its four sub-networks: {FLAGS.step_model}, batch {batch}, "
          f"resolutions {','.join(map(str, resolutions))} (CPU, graph mode; medians of "
          f"{FLAGS.repeats} interleaved runs, ms)\n")
    body = []
    for r in results:
        subs = ", ".join(f"{s['width']:.3g}x@{s['resolution']}: {1e3 * s['seconds']:.1f}"
                         for s in r["sub_networks"])
        body.append([r["draw"], subs, f"{1e3 * r['update_seconds']:.1f}",
                     f"{1e3 * r['sum_seconds']:.1f}", f"{1e3 * r['step_seconds']:.1f}",
                     f"{r['ratio']:.3f}x", f"{r['ratio_best_of']:.3f}x"])
    print(_table(["draw", "sub-networks fwd+bwd (width@res: ms)", "update", "sum", "step",
                  "step / sum", "best-of"], body))
    print(f"\nworst step / sum: {worst:.3f}x, all draws: {overall:.3f}x (target <= 1.20x): "
          f"{'PASS' if worst <= 1.2 else 'FAIL'}\n", flush=True)
    return {"model": FLAGS.step_model, "batch": batch, "resolutions": list(resolutions),
            "repeats": FLAGS.repeats, "draws": results, "ratio": worst,
            "ratio_all_draws": overall, "target": 1.2, "pass": worst <= 1.2}


# ---------------------------------------------------------------------------------------------
# (b), (c) TFLite latency.


class _Latency:
    """Float32 TFLite conversions (cached) and interleaved batch-1 latencies."""

    def __init__(self):
        self.flatbuffers = {}

    def convert(self, key, model, size):
        from bl_keras import export

        if key not in self.flatbuffers:
            self.flatbuffers[key] = export.to_tflite(model, image_size=size)
        return self.flatbuffers[key]

    def measure(self, sizes):
        """Median ms of each key in `sizes` (key -> input size): `latency_rounds` rounds of
        `latency_repeats` interleaved runs; the median of the round medians, and the min."""
        import numpy as np

        from bl_keras import timing

        rng = np.random.default_rng(FLAGS.seed)
        runners = {}
        for key, size in sizes.items():
            run = timing.tflite_runner(self.flatbuffers[key], 1, FLAGS.num_threads or None)
            x = rng.uniform(0, 255, (1, size, size, 3)).astype("float32")
            runners[key] = lambda run=run, x=x: run(x)
        rounds = [_interleaved(runners, FLAGS.latency_repeats, warmup=2)
                  for _ in range(FLAGS.latency_rounds)]
        return ({k: 1e3 * statistics.median(statistics.median(r[k]) for r in rounds)
                 for k in sizes},
                {k: 1e3 * min(min(r[k]) for r in rounds) for k in sizes})


def _calibrated_us_mobilenet(widths, size):
    """us_mobilenet_v1 without preprocessing, BatchNorm statistics at each width (random
    images: only the structure matters for latency)."""
    import numpy as np

    from bl_keras import models, slimmable

    model = models.get("us_mobilenet_v1", include_preprocessing=False)
    images = np.random.default_rng(FLAGS.seed).uniform(-1, 1, (2, size, size, 3))
    for width in widths:
        slimmable.calibrate_batch_norm(model, [images.astype("float32")], width=width)
    return model


def _op_counts(flatbuffer):
    import collections

    from bl_keras import export

    interpreter = export.interpreter(flatbuffer, 1)
    return collections.Counter(op["op_name"] for op in interpreter._get_ops_details())


def tflite_check(latency, us_model):
    import keras

    from bl_keras import profile, slimmable

    size = FLAGS.latency_size
    ours = slimmable.subnetwork(us_model, 1.0)
    reference = keras.applications.MobileNet(weights=None, input_shape=(size, size, 3))
    latency.convert((1.0, size), ours, size)
    latency.convert("keras", reference, size)
    median, best = latency.measure({(1.0, size): size, "keras": size})
    ratio, ratio_best = median[1.0, size] / median["keras"], best[1.0, size] / best["keras"]
    ops = {"subnetwork": _op_counts(latency.flatbuffers[1.0, size]),
           "keras": _op_counts(latency.flatbuffers["keras"])}
    differ = sorted(k for k in set(ops["subnetwork"]) | set(ops["keras"])
                    if ops["subnetwork"][k] != ops["keras"][k])
    macs = {"subnetwork": profile.count_macs(ours, (size, size, 3)),
            "keras": profile.count_macs(reference)}
    print(f"\n## (b) subnetwork(us_mobilenet_v1, 1.0) vs keras.applications.MobileNet: float32 "
          f"TFLite, batch 1, {size}x{size}, {FLAGS.num_threads or 'all'} thread(s) (median of "
          f"{FLAGS.latency_rounds} x {FLAGS.latency_repeats} interleaved runs)\n")
    print(_table(["model", "MMACs", "latency ms", "best ms", "TFLite ops"], [
        [name, f"{macs[name] / 1e6:.1f}", f"{median[key]:.2f}", f"{best[key]:.2f}",
         sum(ops[name].values())]
        for name, key in (("subnetwork", (1.0, size)), ("keras", "keras"))]))
    if differ:
        print("\nTFLite op counts that differ: " + ", ".join(
            f"{k} {ops['subnetwork'][k]} vs {ops['keras'][k]}" for k in differ))
    print(f"\nsubnetwork / keras: {ratio:.3f}x (best-of {ratio_best:.3f}x; target <= 1.05x): "
          f"{'PASS' if ratio <= 1.05 else 'FAIL'}\n", flush=True)
    return {"size": size, "latency_ms": {"subnetwork": median[1.0, size],
                                         "keras": median["keras"]},
            "best_ms": {"subnetwork": best[1.0, size], "keras": best["keras"]},
            "macs": macs, "op_counts": {k: dict(v) for k, v in ops.items()},
            "op_counts_differ": differ, "ratio": ratio, "ratio_best_of": ratio_best,
            "target": 1.05, "pass": ratio <= 1.05}


def latency_table(latency, us_model):
    from bl_keras import profile, slimmable

    widths = sorted(_floats(FLAGS.latency_widths))
    resolutions = sorted(_ints(FLAGS.latency_resolutions))
    sizes = {}
    macs = {}
    for width in widths:
        sub = slimmable.subnetwork(us_model, width)
        for res in resolutions:
            latency.convert((width, res), sub, res)
            sizes[width, res] = res
            macs[width, res] = profile.count_macs(sub, (res, res, 3))
    median, _ = latency.measure(sizes)
    by_width = all(median[a, r] < median[b, r] for r in resolutions
                   for a, b in zip(widths, widths[1:]))
    by_resolution = all(median[w, a] < median[w, b] for w in widths
                        for a, b in zip(resolutions, resolutions[1:]))
    print("\n## (c) us_mobilenet_v1 sub-network latency, float32 TFLite, batch 1 (ms; "
          "MMACs in brackets)\n")
    print(_table(["width \\ resolution", *map(str, reversed(resolutions))], [
        [f"{w:g}x", *(f"{median[w, r]:.2f} ({macs[w, r] / 1e6:.0f})"
                      for r in reversed(resolutions))] for w in reversed(widths)]))
    print(f"\nrises with width at every resolution: {by_width}; with resolution at every "
          f"width: {by_resolution}: {'PASS' if by_width and by_resolution else 'FAIL'}\n",
          flush=True)
    return {"rows": [{"width": w, "resolution": r, "latency_ms": median[w, r],
                      "macs": macs[w, r]} for w in widths for r in resolutions],
            "monotonic_in_width": by_width, "monotonic_in_resolution": by_resolution,
            "pass": by_width and by_resolution}


def cost():
    unknown = sorted(set(FLAGS.checks) - {"step", "tflite", "latency"})
    if unknown:
        raise app.UsageError(f"unknown checks {unknown}: choose from step, tflite, latency")
    results = {}
    if "step" in FLAGS.checks:
        results["step"] = step_check()
    latency = _Latency()
    if "tflite" in FLAGS.checks or "latency" in FLAGS.checks:
        widths = sorted(set(_floats(FLAGS.latency_widths)) | {1.0})
        sizes = {FLAGS.latency_size, *_ints(FLAGS.latency_resolutions)}
        us_model = _calibrated_us_mobilenet(widths, min(sizes))
    if "tflite" in FLAGS.checks:
        results["tflite_vs_keras"] = tflite_check(latency, us_model)
    if "latency" in FLAGS.checks:
        results["latency"] = latency_table(latency, us_model)
    return results


# ---------------------------------------------------------------------------------------------
# The experiment.


def _optimizer(steps):
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(steps - max(1, steps // 20), 1), warmup_target=FLAGS.lr,
        warmup_steps=max(1, steps // 20))
    return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                weight_decay=FLAGS.weight_decay or None)


def train(kind, width=None, resolution=None):
    """Trains one network for --steps; returns (model, seconds)."""
    import keras

    import pipelines
    from bl_keras import models
    from bl_keras.training import methods
    from bl_keras.training.slimmable import MutualLearning

    keras.utils.set_random_seed(FLAGS.seed)
    resolutions = _ints(FLAGS.resolutions)
    kwargs = {"classes": pipelines.get_dataset(FLAGS.dataset, "val", 8, 1, False,
                                               data_dir=FLAGS.data_dir).num_classes,
              "input_shape": (None, None, 3)}
    size = max(resolutions) if resolution is None else resolution
    data_kwargs = {}
    if kind == "mutualnet":
        method = MutualLearning(resolutions=resolutions, num_sampled=FLAGS.num_sampled,
                                seed=FLAGS.seed)
        data_kwargs["multi_resolution"] = resolutions
    elif kind == "usnet":
        method = MutualLearning(resolutions=None, num_sampled=FLAGS.num_sampled,
                                seed=FLAGS.seed)
    else:
        method = methods.Plain()
        kwargs["width_range"] = (width, width)
    model = models.get(FLAGS.model, **kwargs)
    data = pipelines.get_dataset(FLAGS.dataset, "train", size, FLAGS.batch_size, True,
                                 data_dir=FLAGS.data_dir, repeat=True, seed=FLAGS.seed,
                                 **data_kwargs)
    trainer = methods.MethodModel(model, method)
    optimizer = _optimizer(FLAGS.steps)
    if kind == "independent":  # as MutualLearning: no decay on BatchNorm
        from bl_keras.training.slimmable import kernels_to_decay

        decayed = kernels_to_decay(model)
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if id(v) not in decayed])
    trainer.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
    start = time.perf_counter()
    history = trainer.fit(data, epochs=1, steps_per_epoch=FLAGS.steps, verbose=0)
    seconds = time.perf_counter() - start
    label = kind if width is None else f"{kind} {width:g}x@{size}"
    print(f"trained {label}: {FLAGS.steps} steps in {seconds:.1f} s, final training loss "
          f"{history.history['loss'][-1]:.3f}", flush=True)
    return model, seconds


def _query(model, widths, resolutions):
    from bl_keras.query_table import query_table

    return query_table(model, FLAGS.dataset, widths=widths, resolutions=resolutions,
                       data_dir=FLAGS.data_dir, batch_size=FLAGS.query_batch_size,
                       num_calibration_images=FLAGS.calibration_images, latency=False,
                       seed=FLAGS.seed, progress=False)


def _choice(table, budget):
    from bl_keras.query_table import best_config

    try:
        return best_config(table, max_macs=budget)
    except ValueError:
        return None


def experiment():
    from bl_keras import plots
    from bl_keras.query_table import parse_widths

    resolutions = sorted(_ints(FLAGS.resolutions), reverse=True)
    largest = resolutions[0]
    widths = parse_widths(FLAGS.widths)
    independent_widths = _floats(FLAGS.independent_widths)
    start = time.perf_counter()
    tables, seconds = {}, {}
    for kind in ("mutualnet", "usnet"):
        model, seconds[kind] = train(kind)
        tables[kind] = _query(model, widths, resolutions)
    tables["independent"], seconds["independent"] = [], 0.0
    for width in independent_widths:
        for res in (resolutions if FLAGS.independent_per_resolution else [largest]):
            model, took = train("independent", width, res)
            seconds["independent"] += took
            queried = [res] if FLAGS.independent_per_resolution else resolutions
            for row in _query(model, [width], queried):
                tables["independent"].append({**row, "trained_at": res})
    tables["usnet_single_resolution"] = [r for r in tables["usnet"]
                                         if r["resolution"] == largest]
    full = max(r["macs"] for r in tables["mutualnet"])
    budgets = [float(b) * full for b in FLAGS.budgets]
    names = {"mutualnet": "MutualNet", "usnet_single_resolution": f"US-Net ({largest})",
             "usnet": "US-Net+ (all res.)", "independent": "independent"}
    choices = [{"budget_macs": b, **{k: _choice(tables[k], b) for k in names}}
               for b in budgets]

    print(f"\n## Experiment: {FLAGS.model} on {FLAGS.dataset}, {FLAGS.steps} steps of batch "
          f"{FLAGS.batch_size} each; resolutions {','.join(map(str, resolutions))}; top-1 on "
          f"the validation split (BatchNorm post-statistics from {FLAGS.calibration_images} "
          f"training images per configuration)\n")
    runs = {"mutualnet": 1, "usnet": 1, "independent": len(independent_widths) * (
        len(resolutions) if FLAGS.independent_per_resolution else 1)}
    print(_table(["run", "networks", "training s", "s / step / network"], [
        [k, runs[k], f"{seconds[k]:.1f}", f"{seconds[k] / FLAGS.steps / runs[k]:.3f}"]
        for k in runs]))
    print()
    by_config = {k: {(r["width"], r["resolution"]): r for r in tables[k]}
                 for k in ("mutualnet", "usnet", "independent")}
    body = []
    for res in resolutions:
        for width in sorted({w for (w, r) in by_config["mutualnet"] if r == res} |
                            {w for (w, r) in by_config["independent"] if r == res}):
            cells = [f"{width:g}x", res]
            row = by_config["mutualnet"].get((width, res)) or by_config["independent"][
                width, res]
            cells.append(f"{row['macs'] / 1e6:.2f}")
            for kind in ("mutualnet", "usnet", "independent"):
                r = by_config[kind].get((width, res))
                cells.append("" if r is None else f"{100 * r['top1']:.1f}")
            body.append(cells)
    print(_table(["width", "res.", "MMACs", "MutualNet top-1", "US-Net top-1",
                  "independent top-1"], body))
    print("\nChosen configuration per MACs budget (best_config: best top-1 within the budget)"
          "\n")

    def describe(row):
        if row is None:
            return "none fits"
        return (f"{row['width']:g}x@{row['resolution']}: {100 * row['top1']:.1f}% "
                f"({row['macs'] / 1e6:.2f} M)")

    print(_table(["budget MMACs", *names.values()], [
        [f"{c['budget_macs'] / 1e6:.2f}", *(describe(c[k]) for k in names)] for c in choices]))
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    plot = plots.mutualnet_comparison(
        {"MutualNet": tables["mutualnet"], f"US-Net ({largest})":
         tables["usnet_single_resolution"], "US-Net+ (all res.)": tables["usnet"]},
        os.path.join(FLAGS.output_dir, "mutualnet_accuracy_macs.png"),
        points={"independent": tables["independent"]},
        title=f"{FLAGS.model} on {FLAGS.dataset}, {FLAGS.steps} steps")
    print(f"\nplot: {plot}; experiment took {time.perf_counter() - start:.0f} s\n", flush=True)
    return {"dataset": FLAGS.dataset, "model": FLAGS.model, "steps": FLAGS.steps,
            "batch_size": FLAGS.batch_size, "resolutions": resolutions, "widths": widths,
            "independent_widths": list(independent_widths),
            "independent_per_resolution": FLAGS.independent_per_resolution,
            "training_seconds": seconds, "tables": tables, "choices": choices, "plot": plot}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # TFLite conversion's SavedModel chatter
    if FLAGS.smoke:
        for name, value in SMOKE.items():
            if not FLAGS[name].present:
                FLAGS[name].value = value
    started = time.perf_counter()
    results = {"smoke": FLAGS.smoke}
    if FLAGS.cost:
        results["cost"] = cost()
    if FLAGS.experiment:
        results["experiment"] = experiment()
    results["seconds"] = time.perf_counter() - started
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    path = os.path.join(FLAGS.output_dir, "mutualnet.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=float)
    print(f"results: {path} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    app.run(main)
