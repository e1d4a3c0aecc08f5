"""TFLite (LiteRT, XNNPACK) against ONNX Runtime on the same network, and where they differ.

    python benchmarks/tflite_vs_onnx.py                    # bL-ResNet-50 at 224, 5 min on 2 cores
    python benchmarks/tflite_vs_onnx.py --model=bl_resnet20_cifar --size=32 --repeats=3 \\
        --latency_repeats=3                                # smoke

1. The whole network on every variant of the two runtimes (`--variants`, see `VARIANTS`), all
   timed in one interleaved loop at --batch and at batch 1.
2. Stage by stage at batch 1: the model up to the end of its stem and of each stage is exported
   to both runtimes (`bl_keras.export.to_tflite` / `to_onnx`); the prefixes are timed in one
   interleaved loop and a stage's time is the difference of consecutive prefixes. Beside each
   stage: its MACs and the rate each runtime reaches on it, so a stage that costs one runtime
   more than its MACs stands out. LiteRT's Python API has no per-op profiler; timing prefixes
   measures both runtimes the same way.
3. Every distinct convolution of the network alone at batch 1, both runtimes in one interleaved
   loop, summed over the network by output size beside the whole network (does the network's
   gap live in the convolutions' kernels, or elsewhere?), and the convolutions where TFLite
   loses the most time, also on one thread (the kernels, or how work is split over threads?).
"""

import collections
import os

import keras
import numpy as np
from absl import app, flags, logging
from tqdm.auto import tqdm

from bl_keras import benchmark, export, models, profile, timing
from bl_keras.layers.resample import resize_merges

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "bl_resnet50", "Registered image model.")
flags.DEFINE_integer("size", 224, "Input size.")
flags.DEFINE_integer("batch", 16, "Batch of the throughput measurement.")
flags.DEFINE_integer("repeats", 10, "Timed runs at --batch.")
flags.DEFINE_integer("latency_repeats", 100, "Timed runs at batch 1.")
flags.DEFINE_list("variants", None, "Variants of the whole-network comparison (default: all).")
flags.DEFINE_bool("stages", True, "Also time the network stage by stage at batch 1.")
flags.DEFINE_bool("convs", True, "Also time each distinct convolution alone at batch 1.")
flags.DEFINE_integer("top", 8, "Convolutions listed where TFLite loses the most time.")

STAGE_PREFIXES = ("stem", "stage1", "stage2", "stage3", "stage4")
RUNTIMES = ("tflite", "onnx")  # the two compared stage by stage and convolution by convolution


def tflite_resize_merges(model):
    """The flatbuffer with the merges traced as nearest resizes (as for ONNX) instead of the
    broadcast add over a (h, 2, w, 2) view."""
    with resize_merges():
        return export.to_tflite(model)


# name -> (runtime, export function)
VARIANTS = {
    "tflite": ("tflite", export.to_tflite),
    "litert_compiled": ("litert_compiled", export.to_tflite),
    "tflite_resize_merges": ("tflite", tflite_resize_merges),
    "onnx": ("onnx", export.to_onnx),
}


def compiled_model_runner(flatbuffer, batch):
    """LiteRT's CompiledModel API (XNNPACK, one thread per core) on the same flatbuffer."""
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.cpu_options import CpuOptions
    from ai_edge_litert.options import Options

    compiled = CompiledModel.from_buffer(
        flatbuffer, options=Options(cpu_options=CpuOptions(num_threads=os.cpu_count())))
    if batch != 1:
        shape = compiled.get_input_tensor_details("serving_default")["images"]["shape"]
        compiled.resize_input_tensor(0, [batch, *shape[1:]], 0)
    inputs, outputs = compiled.create_input_buffers(0), compiled.create_output_buffers(0)
    output_shape = compiled.get_output_tensor_details("serving_default")["output_0"]["shape"]
    size = batch * int(np.prod(output_shape[1:]))

    def run(x):
        inputs[0].write(x)
        compiled.run_by_index(0, inputs, outputs)
        return outputs[0].read(size, np.float32)

    return run


def external(runtime, exported, shape, num_threads=None, calls=1):
    """Our export on one runtime, labelled "cpu" so that every entry of a `timing.measure` call
    is timed in one interleaved loop; a timed run makes `calls` calls in a row."""

    def make_runner(batch):
        if runtime == "litert_compiled":
            run = compiled_model_runner(exported, batch)
        else:
            run = timing.make_runner(None, runtime, batch, num_threads, flatbuffer=exported)
        return run if calls == 1 else lambda x: [run(x) for _ in range(calls)]

    return timing.External("cpu", shape, make_runner)


def cut_points(model):
    """(stage name, layer) for the last top-level layer of the stem and of each stage, then the
    model's output layer."""
    points = []
    for prefix in STAGE_PREFIXES:
        names = [layer.name for layer in model.layers if layer.name.startswith(prefix)]
        if names:
            points.append((prefix, model.get_layer(names[-1])))
    points.append(("head", model.layers[-1]))
    return points


def by_key(timings):
    return {(t.model, t.batch): t.seconds for t in timings}


def whole_network(model, shape):
    names = FLAGS.variants or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise app.UsageError(f"--variants must be among {list(VARIANTS)}, got {unknown}")
    entries, exported = {}, {}
    for name in names:
        runtime, export_fn = VARIANTS[name]
        if export_fn not in exported:  # the two LiteRT APIs run one flatbuffer
            exported[export_fn] = export_fn(model)
        entries[name] = external(runtime, exported[export_fn], shape)
    times = by_key(timing.measure(entries, runtimes=(), batches=(FLAGS.batch, 1),
                                  repeats=FLAGS.repeats, latency_repeats=FLAGS.latency_repeats))
    base = "onnx" if "onnx" in names else names[0]
    rows = [[name, f"{FLAGS.batch / times[name, FLAGS.batch]:.1f}",
             f"{times[name, 1] * 1e3:.2f}",
             f"{times[name, 1] / times[base, 1]:.3f}"] for name in names]
    print(f"\n## {FLAGS.model} at {FLAGS.size}x{FLAGS.size}, {os.cpu_count()} threads, one "
          f"interleaved run (median of {FLAGS.repeats} runs at batch {FLAGS.batch}, "
          f"{FLAGS.latency_repeats} at batch 1)\n")
    print(benchmark.format_table(
        ["variant", f"batch {FLAGS.batch} img/s", "batch 1 ms", f"batch 1 time / {base}'s"],
        rows))
    return times


def by_stage(model, shape):
    points = cut_points(model)
    prefixes = [keras.Model(model.input, layer.output, name=f"{model.name}_{stage}")
                for stage, layer in points]
    macs = [profile.count_macs(m) for m in prefixes]
    entries = {}
    for (stage, _), prefix in zip(points, prefixes):
        for r in RUNTIMES:
            entries[r, stage] = external(r, VARIANTS[r][1](prefix), shape)
    times = by_key(timing.measure(entries, runtimes=(), batches=(1,),
                                  latency_repeats=FLAGS.latency_repeats))
    rows, previous = [], {"tflite": 0.0, "onnx": 0.0, "macs": 0}
    for (stage, _), stage_macs in zip(points, macs):
        ms = {r: (times[(r, stage), 1] - previous[r]) * 1e3 for r in RUNTIMES}
        mmacs = (stage_macs - previous["macs"]) / 1e6
        rows.append([stage, f"{mmacs:.0f}", f"{ms['tflite']:.2f}", f"{ms['onnx']:.2f}",
                     *(f"{mmacs / ms[r]:.0f}" if ms[r] > 0 else "-" for r in RUNTIMES),
                     f"{ms['tflite'] / ms['onnx']:.2f}" if ms["onnx"] > 0 else "-"])
        previous = {**{r: times[(r, stage), 1] for r in RUNTIMES}, "macs": stage_macs}
    print(f"\n## Stage by stage, batch 1 (differences of interleaved prefix timings, median of "
          f"{FLAGS.latency_repeats})\n")
    print(benchmark.format_table(
        ["stage", "MMACs", "tflite ms", "onnx ms", "tflite GMAC/s", "onnx GMAC/s",
         "tflite / onnx"], rows))


ConvShape = collections.namedtuple("ConvShape", "kernel strides groups padding input filters")


def conv_shapes(model):
    """Counter of the distinct convolutions (`ConvShape`) the model calls at its input size."""
    by_path = {layer.path: layer for layer in model._flatten_layers()}
    counts = collections.Counter()
    for record in profile.mac_table(model):
        layer = by_path[record.path]
        if type(layer) is keras.layers.Conv2D:
            counts[ConvShape(layer.kernel_size, layer.strides, layer.groups, layer.padding,
                             record.input_shape[1:], layer.filters)] += 1
    return counts


def single_conv(conv):
    """The convolution alone (with the ReLU that TFLite and ONNX Runtime fuse into most)."""
    return keras.Sequential([
        keras.Input(conv.input),
        keras.layers.Conv2D(conv.filters, conv.kernel, conv.strides, conv.padding,
                            groups=conv.groups, activation="relu"),
    ])


TRIVIAL = ("call", (1, 1, 8))  # a model of one ReLU on 8 numbers: the cost of one call


def export_convs(convs):
    """{(runtime, conv): export} of each convolution alone and of the trivial model, and
    {conv: (MACs, output size)}."""
    trivial = keras.Sequential([keras.Input(TRIVIAL[1]), keras.layers.ReLU()])
    exported = {(r, TRIVIAL): VARIANTS[r][1](trivial) for r in RUNTIMES}
    facts = {}
    for conv in tqdm(convs, desc="exporting single convolutions", leave=False):
        alone = single_conv(conv)
        facts[conv] = (profile.count_macs(alone), alone.output_shape[1])
        for r in RUNTIMES:
            exported[r, conv] = VARIANTS[r][1](alone)
    return exported, facts


CALLS_PER_RUN = 10  # a timed run calls a single convolution 10 times in a row, as in a network


def time_alone(exported, convs, num_threads=None):
    """{(runtime, conv): ms of one call at batch 1 on `num_threads` threads (default one per
    core), less the runtime's cost of a call}, every entry timed in one interleaved loop; each
    timed run is `CALLS_PER_RUN` calls in a row (warm caches and threads, as inside a network)."""
    entries = {(r, c): external(r, exported[r, c], TRIVIAL[1] if c == TRIVIAL else c.input,
                                num_threads, calls=CALLS_PER_RUN)
               for r in RUNTIMES for c in (TRIVIAL, *convs)}
    times = by_key(timing.measure(entries, runtimes=(), batches=(1,),
                                  latency_repeats=FLAGS.latency_repeats))
    ms = {key: times[key, 1] * 1e3 / CALLS_PER_RUN for key in entries}
    call = {r: ms[r, TRIVIAL] for r in RUNTIMES}
    return {(r, c): ms[r, c] - call[r] for r in RUNTIMES for c in convs}, call


def by_conv(model, whole):
    """Every distinct convolution of the model timed alone at batch 1, summed over the network
    by output size, beside the whole network; then the convolutions where TFLite loses most."""
    counts = conv_shapes(model)
    exported, facts = export_convs(counts)
    ms, call = time_alone(exported, counts)
    groups = collections.defaultdict(collections.Counter)
    for conv, n in counts.items():
        macs, size = facts[conv]
        group = groups[f"{size}x{size}"]
        group.update({"convs": n, "macs": n * macs,
                      **{r: n * ms[r, conv] for r in RUNTIMES}})
    total = sum(groups.values(), collections.Counter())
    rows = [[name, str(g["convs"]), f"{g['macs'] / 1e6:.0f}",
             *(f"{g[r]:.2f}" for r in RUNTIMES),
             *(f"{g['macs'] / 1e6 / g[r]:.0f}" for r in RUNTIMES), f"{g['tflite'] / g['onnx']:.2f}"]
            for name, g in [*groups.items(), ("all convolutions", total)]]
    if all((r, 1) in whole for r in RUNTIMES):  # both variants in the whole-network table
        network = {r: whole[r, 1] * 1e3 for r in RUNTIMES}
        rows += [["whole network", "", "", *(f"{network[r]:.2f}" for r in RUNTIMES), "", "",
                  f"{network['tflite'] / network['onnx']:.2f}"],
                 ["rest (network - convolutions)", "", "",
                  *(f"{network[r] - total[r]:.2f}" for r in RUNTIMES), "", "", ""]]
    rows.append(["one call, subtracted above", "", "", *(f"{call[r]:.3f}" for r in RUNTIMES),
                 "", "", ""])
    print(f"\n## Each distinct convolution alone, batch 1, summed over the network by output "
          f"size ({len(counts)} distinct of {sum(counts.values())}; median of "
          f"{FLAGS.latency_repeats}, interleaved)\n")
    print(benchmark.format_table(
        ["output size", "convs", "MMACs", "tflite ms", "onnx ms", "tflite GMAC/s",
         "onnx GMAC/s", "tflite / onnx"], rows))

    # The convolutions where TFLite loses most, timed again on one thread each: is the gap in
    # the kernels, or in how the work is split over the threads?
    worst = sorted(counts, key=lambda c: counts[c] * (ms["onnx", c] - ms["tflite", c]))
    worst = worst[:FLAGS.top]
    single, _ = time_alone(exported, worst, num_threads=1)
    rows = [[f"{c.kernel[0]}x{c.kernel[1]}/{c.strides[0]}" + (f" g{c.groups}" * (c.groups > 1)),
             f"{c.input[0]}x{c.input[1]}x{c.input[2]} -> {c.filters}", str(counts[c]),
             f"{facts[c][0] / 1e6:.1f}", *(f"{ms[r, c]:.3f}" for r in RUNTIMES),
             f"{ms['tflite', c] / ms['onnx', c]:.2f}", *(f"{single[r, c]:.3f}" for r in RUNTIMES),
             f"{single['tflite', c] / single['onnx', c]:.2f}"] for c in worst]
    print(f"\n## The {len(rows)} convolutions that cost TFLite the most time over ONNX Runtime "
          f"(one call each, on {os.cpu_count()} threads and on 1)\n")
    print(benchmark.format_table(
        ["kernel/stride", "input -> filters", "count", "MMACs", "tflite ms", "onnx ms",
         "tflite / onnx", "tflite ms, 1 thread", "onnx ms, 1 thread", "tflite / onnx, 1 thread"],
        rows))


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines for every export
    model = models.get(FLAGS.model, input_shape=(FLAGS.size, FLAGS.size, 3))
    shape = (FLAGS.size, FLAGS.size, 3)
    whole = whole_network(model, shape)
    if FLAGS.stages:
        by_stage(model, shape)
    if FLAGS.convs:
        by_conv(model, whole)


if __name__ == "__main__":
    app.run(main)
