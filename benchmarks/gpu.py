"""Do the saved MACs become GPU time? Big-Little against its baseline on one GPU, under JAX.

    KERAS_BACKEND=jax python benchmarks/gpu.py --output=gpu.json          # on a GPU
    KERAS_BACKEND=jax python benchmarks/gpu.py --smoke --output=smoke.json # tiny, on CPU

Groups run in order of priority, so a short lease still gives the first rows: `resnet50`
against `bl_resnet50` under `mixed_bfloat16` (training step, then inference, at batch 64 and
at the paper's batch 16), the same in float32, `resnext50_32x4d` / `bl_resnext50_32x4d` and
`resnet101` / `bl_resnet101` (bfloat16), `multires_10x64` with its example mixing against its
pruned version (threshold 0.1), and US-MobileNetV1 sub-networks at widths 1.0 to 0.25.

Each group is timed in one interleaved run (model A, model B, A, B, ...; the median of
--repeats runs of --iters steps each, after a compiling warm-up), so ratios within a group are
fair on a busy machine. Per row: the step time, images/s, the realised speedup against the
group's first model beside its MAC ratio, and the achieved TFLOP/s (2 x MACs per image for
inference, 6 x MACs for a training step: forward, and backward for inputs and weights).

The training step is the Keras JAX trainer's own (`model.stateless_call`, `jax.value_and_grad`,
`optimizer.stateless_apply`, one `jax.jit` with the state donated: what `fit` with
`jit_compile=True` runs per step), SGD with momentum 0.9 and sparse cross-entropy; inference
is `stateless_call(training=False)` jitted. Inputs are random images already on the device.
Rows are written to --output (JSON) and printed as they come; --budget_s stops before a group
that would not finish in time, so a run cut short keeps its rows. Needs JAX, not TensorFlow.
"""

import dataclasses
import json
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool("smoke", False, "Tiny models and sizes (CPU, seconds): checks the code path.")
flags.DEFINE_string("output", "gpu_benchmark.json", "JSON file of the rows, rewritten per row.")
flags.DEFINE_float("budget_s", 420.0, "Stop before a group that would end after this.")
flags.DEFINE_integer("repeats", 5, "Timed runs per model (the median is reported).")
flags.DEFINE_integer("iters", 10, "Steps per timed run.")
flags.DEFINE_list("groups", None, "Only these groups (names as in the table), in this order.")


@dataclasses.dataclass(frozen=True)
class Group:
    name: str
    models: tuple  # (label, builder) pairs; the first is the reference
    input_shape: tuple
    mode: str  # "train" or "infer"
    batch: int
    policy: str  # Keras dtype policy


def _registered(name, **kwargs):
    def build():
        from bl_keras import models

        return models.get(name, **kwargs)

    return build


def _pruned_multires(**kwargs):
    def build():
        from bl_keras import models, multires

        return multires.prune(multires.example_mixing(models.get("multires_10x64", **kwargs)),
                              threshold=0.1)

    return build


def _us_mobilenet(width, size, **kwargs):
    """A US-MobileNetV1 sub-network; the widths of a group slice one built model."""
    key = (size, tuple(sorted(kwargs.items())))

    def build():
        from bl_keras import models, slimmable

        if key not in _US_MODELS:
            _US_MODELS.clear()  # one at a time
            _US_MODELS[key] = models.us_mobilenet_v1(input_shape=(size, size, 3), **kwargs)
        return slimmable.subnetwork(_US_MODELS[key], width, require_statistics=False)

    return build


_US_MODELS = {}


def _pair_groups(name, first, second, shape, policies, batches, modes=("train", "infer"),
                 **kwargs):
    models = ((first, _registered(first, **kwargs)), (second, _registered(second, **kwargs)))
    return [Group(f"{name} {mode} b{batch} {policy}", models, shape, mode, batch, policy)
            for policy in policies for batch in batches for mode in modes]


def plan(smoke):
    """The groups in order of priority."""
    bf16, fp32 = "mixed_bfloat16", "float32"
    if smoke:
        tiny = dict(classes=10)
        multires = dict(filters=4, classes=10)
        return [
            *_pair_groups("resnet20", "resnet20_cifar", "bl_resnet20_cifar", (32, 32, 3),
                          [bf16], [2], modes=("infer",), **tiny),
            Group(f"multires train b2 {bf16}",
                  (("multires_10x64", _registered("multires_10x64", **multires)),
                   ("pruned", _pruned_multires(**multires))), (32, 32, 3), "train", 2, bf16),
            Group("us_mobilenet_v1 infer b2 float32",
                  tuple((f"width {w}", _us_mobilenet(w, 32, classes=10)) for w in (1.0, 0.5)),
                  (32, 32, 3), "infer", 2, fp32),
        ]
    image = (224, 224, 3)
    return [
        *_pair_groups("resnet50", "resnet50", "bl_resnet50", image, [bf16], [64, 16]),
        *_pair_groups("resnet50", "resnet50", "bl_resnet50", image, [fp32], [64, 16]),
        *_pair_groups("resnext50", "resnext50_32x4d", "bl_resnext50_32x4d", image, [bf16],
                      [64, 16]),
        *_pair_groups("resnet101", "resnet101", "bl_resnet101", image, [bf16], [64, 16]),
        *[Group(f"multires {mode} b64 {bf16}",
                (("multires_10x64", _registered("multires_10x64", classes=10)),
                 ("pruned", _pruned_multires(classes=10))), (32, 32, 3), mode, 64, bf16)
          for mode in ("train", "infer")],
        *[Group(f"us_mobilenet_v1 {mode} b64 {bf16}",
                tuple((f"width {w}", _us_mobilenet(w, 224)) for w in (1.0, 0.75, 0.5, 0.25)),
                image, mode, 64, bf16)
          for mode in ("infer", "train")],
    ]


def _runner(model, mode, batch, input_shape):
    """A function running --iters steps of `model` and waiting for them; its state lives in
    the closure (donated and replaced each step)."""
    import jax
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    x = jax.device_put(rng.uniform(0, 255, (batch, *input_shape)).astype("float32"))
    classes = model.outputs[0].shape[-1]
    y = jax.device_put(rng.integers(0, classes, (batch,)).astype("int32"))
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]

    if mode == "infer":
        forward = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])

        def run(iters):
            for _ in range(iters):
                out = forward(trainable, frozen, x)
            out.block_until_ready()

        return run

    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def loss_and_state(tv, ntv, x, y):
        logits, ntv = model.stateless_call(tv, ntv, x, training=True)
        return loss_fn(y, logits), ntv

    gradients = jax.value_and_grad(loss_and_state, has_aux=True)

    def step(tv, ntv, ov, x, y):
        (loss, ntv), grads = gradients(tv, ntv, x, y)
        tv, ov = optimizer.stateless_apply(ov, grads, tv)
        return tv, ntv, ov, loss

    step = jax.jit(step, donate_argnums=(0, 1, 2))
    state = [trainable, frozen, [v.value for v in optimizer.variables]]

    def run(iters):
        for _ in range(iters):
            *new_state, loss = step(*state, x, y)
            state[:] = new_state
        loss.block_until_ready()

    return run


def time_group(group, repeats, iters):
    """Rows of one group: each model's median time of `iters` steps, interleaved."""
    import keras

    from bl_keras import profile

    keras.config.set_dtype_policy(group.policy)
    try:
        built = [(label, build()) for label, build in group.models]
    finally:
        keras.config.set_dtype_policy("float32")
    runners = []
    for _, model in built:
        run = _runner(model, group.mode, group.batch, group.input_shape)
        run(1)  # compile
        runners.append(run)
    times = [[] for _ in built]
    for _ in range(repeats):
        for index, run in enumerate(runners):
            start = time.perf_counter()
            run(iters)
            times[index].append((time.perf_counter() - start) / iters)
    flops_per_mac = 6 if group.mode == "train" else 2
    rows = []
    for (label, model), samples in zip(built, times):
        step_s = statistics.median(samples)
        macs = profile.count_macs(model, group.input_shape)
        rows.append({"group": group.name, "model": label, "mode": group.mode,
                     "batch": group.batch, "policy": group.policy,
                     "input": list(group.input_shape), "macs": macs,
                     "params": profile.count_params(model), "step_ms": step_s * 1e3,
                     "images_per_s": group.batch / step_s,
                     "tflops": flops_per_mac * macs * group.batch / step_s / 1e12})
    reference = rows[0]
    for row in rows:
        row["mac_ratio"] = reference["macs"] / row["macs"]
        row["speedup"] = reference["step_ms"] / row["step_ms"]
    return rows


HEADER = (f"{'group':34} {'model':20} {'GMACs':>7} {'MAC ratio':>9} {'ms/step':>9} "
          f"{'img/s':>9} {'speedup':>8} {'TFLOP/s':>8}")


def format_row(row):
    return (f"{row['group']:34} {row['model']:20} {row['macs'] / 1e9:7.3f} "
            f"{row['mac_ratio']:8.2f}x {row['step_ms']:9.2f} {row['images_per_s']:9.1f} "
            f"{row['speedup']:7.2f}x {row['tflops']:8.2f}")


def device_name():
    import jax

    device = jax.devices()[0]
    return f"{device.platform}: {getattr(device, 'device_kind', str(device))}"


def run_benchmark(groups, output, budget_s, repeats, iters, log=print):
    """Times `groups` in order, rewriting `output` after each; returns the result dict."""
    import keras

    result = {"backend": keras.backend.backend(), "device": device_name(), "repeats": repeats,
              "iters": iters, "rows": [], "skipped": [], "complete": False}
    start = time.monotonic()
    longest = 0.0
    log(f"device: {result['device']}, budget {budget_s:.0f} s")
    log(HEADER)
    for index, group in enumerate(groups):
        elapsed = time.monotonic() - start
        if elapsed + longest > budget_s:  # the slowest group so far would not fit
            result["skipped"] = [g.name for g in groups[index:]]
            log(f"budget: stopping after {elapsed:.0f} s; not run: {', '.join(result['skipped'])}")
            break
        began = time.monotonic()
        for row in time_group(group, repeats, iters):
            result["rows"].append(row)
            log(format_row(row))
        longest = max(longest, time.monotonic() - began)
        keras.backend.clear_session()
        _write(result, output)
    else:
        result["complete"] = True
    result["seconds"] = time.monotonic() - start
    _write(result, output)
    return result


def _write(result, output):
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    partial = output + ".partial"
    with open(partial, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(partial, output)  # a run killed mid-write keeps the previous rows


def main(argv):
    del argv
    import keras

    if keras.backend.backend() != "jax":
        raise app.UsageError(f"benchmarks/gpu.py runs under KERAS_BACKEND=jax, not "
                             f"{keras.backend.backend()!r}")
    groups = plan(FLAGS.smoke)
    if FLAGS.groups:
        by_name = {g.name: g for g in groups}
        unknown = [name for name in FLAGS.groups if name not in by_name]
        if unknown:
            raise app.UsageError(f"unknown --groups {unknown}; known: {list(by_name)}")
        groups = [by_name[name] for name in FLAGS.groups]
    run_benchmark(groups, FLAGS.output, FLAGS.budget_s, FLAGS.repeats, FLAGS.iters)


if __name__ == "__main__":
    app.run(main)
