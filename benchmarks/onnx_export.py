"""What the ONNX export's rewrites buy in ONNX Runtime, against the official PyTorch model.

    python benchmarks/onnx_export.py --official_code=/src/BigLittleNet   # ~2 min on 2 cores
    python benchmarks/onnx_export.py --model=bl_resnet20_cifar --size=32 --repeats=3 \\
        --latency_repeats=3                                                # smoke

Times in one interleaved ONNX Runtime run, batch --batch and batch 1: `--model` exported with
`bl_keras.export.to_onnx(optimize=False)` (tf2onnx's graph, taking the image alone), with the
rewrites (`optimize=True`, what `apps.export --format=onnx` writes), and with --official_code
the official PyTorch model (IBM/BigLittleNet) exported with `torch.onnx.export`. With
--official_weights both models get the same official weights and the outputs are compared
(softmax of the official logits against ours). Also prints, for each graph, the op types
ONNX Runtime runs after its own graph optimizations and the time its profiler gives each op
type at batch 1.
"""

import collections
import os
import tempfile

import numpy as np
from absl import app, flags

from bl_keras import benchmark, convert, export, models, official, timing

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "bl_resnet50", "Registered model to export.")
flags.DEFINE_integer("size", 224, "Input size.")
flags.DEFINE_integer("batch", 16, "Batch of the throughput measurement.")
flags.DEFINE_integer("repeats", 10, "Timed runs at --batch.")
flags.DEFINE_integer("latency_repeats", 50, "Timed runs at batch 1.")
flags.DEFINE_string("official_code", None, "A checkout of IBM/BigLittleNet (needs torch).")
flags.DEFINE_string("official_weights", None, "Official weights for both models (.pth/.npz).")

PLAIN, OURS = "tf2onnx as is", "ours (rewritten)"


def runtime_ops(onnx_model):
    """Counter of the op types ONNX Runtime runs after its own graph optimizations."""
    import onnx
    import onnxruntime

    with tempfile.TemporaryDirectory() as tmp:
        options = onnxruntime.SessionOptions()
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        options.log_severity_level = 3
        onnxruntime.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    return collections.Counter(node.op_type for node in graph.node)


def op_times(graphs, size, runs):
    """{graph name: {op type: (nodes, ms per run)}} at batch 1 from ONNX Runtime's own profiler
    (each node's median kernel time, summed by op type; threads and spinning as
    `bl_keras.timing` runs them), the graphs' sessions taking turns in a rotating order, after
    one warm-up run each."""
    import json

    import onnxruntime

    with tempfile.TemporaryDirectory() as tmp:
        sessions, feeds = {}, {}
        for i, (name, graph) in enumerate(graphs.items()):
            options = onnxruntime.SessionOptions()
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(tmp, f"profile{i}")
            options.intra_op_num_threads = os.cpu_count()
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3
            sessions[name] = onnxruntime.InferenceSession(graph, options,
                                                          providers=["CPUExecutionProvider"])
            image = sessions[name].get_inputs()[0]
            nchw = image.shape[1] == 3  # the official graph
            shape = (1, 3, size, size) if nchw else (1, size, size, 3)
            feeds[name] = {image.name: np.random.default_rng(0).uniform(0, 255, shape)
                           .astype("float32")}
        names = list(sessions)
        for run in range(runs + 1):
            for name in names[run % len(names):] + names[:run % len(names)]:  # rotating order
                sessions[name].run(None, feeds[name])
        times = {}
        for name, session in sessions.items():
            with open(session.end_profiling()) as f:
                events = json.load(f)
            calls = collections.defaultdict(list)  # (op, node) -> microseconds, in run order
            for event in events:
                if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                    calls[event["args"]["op_name"], event["name"]].append(event["dur"])
            ops = collections.defaultdict(lambda: [0, 0.0])
            for (op, _), durations in calls.items():
                ops[op][0] += 1
                ops[op][1] += float(np.median(durations[1:])) / 1e3  # less the warm-up
            times[name] = {op: tuple(v) for op, v in ops.items()}
    return times


def print_op_times(times):
    """One table of `op_times` per graph (name -> {op: (nodes, ms)}), ours' costliest first."""
    kinds = sorted(set().union(*times.values()), key=lambda op: -times[OURS].get(op, (0, 0))[1])
    rows = []
    for op in kinds:
        cells = [(str(t[op][0]), f"{t[op][1]:.2f}") if op in t else ("", "")
                 for t in times.values()]
        rows.append([op, *(c for pair in cells for c in pair)])
    totals = [(str(sum(n for n, _ in t.values())), f"{sum(ms for _, ms in t.values()):.2f}")
              for t in times.values()]
    rows.append(["all", *(c for pair in totals for c in pair)])
    print(f"\n## Time per op type in ONNX Runtime at batch 1 (its profiler, median of "
          f"{FLAGS.latency_repeats} runs, the graphs taking turns)\n")
    print(benchmark.format_table(
        ["op", *(f"{name}: {unit}" for name in times for unit in ("nodes", "ms"))], rows))


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def main(argv):
    del argv
    model = models.get(FLAGS.model, input_shape=(FLAGS.size, FLAGS.size, 3))
    if FLAGS.official_weights:
        convert.load_official_weights(model, FLAGS.official_weights)
    size = FLAGS.size
    graphs = {PLAIN: export.to_onnx(model, optimize=False), OURS: export.to_onnx(model)}
    if FLAGS.official_code:
        torch_model = official.build(FLAGS.official_code, FLAGS.model, FLAGS.official_weights)
        graphs[benchmark.OFFICIAL] = official.to_onnx(torch_model, size)
    entries = {
        name: official.external(graph, size) if name == benchmark.OFFICIAL else
        timing.External("onnx", (size, size, 3),
                        lambda batch, graph=graph: timing.onnx_runner(graph))
        for name, graph in graphs.items()
    }
    if FLAGS.official_code and FLAGS.official_weights:
        images = np.random.default_rng(0).uniform(0, 255, (4, size, size, 3)).astype("float32")
        session = export.onnx_session(graphs[benchmark.OFFICIAL])
        theirs = softmax(session.run(None, {"input": official.normalise(images)})[0])
        ours = export.onnx_predict(graphs[OURS], images)
        print(f"same weights, 4 random images: max |softmax(official) - ours| = "
              f"{np.abs(theirs - ours).max():.3g}, top-1 agreement "
              f"{np.mean(theirs.argmax(-1) == ours.argmax(-1)):.0%}\n")
    print(f"## Ops ONNX Runtime runs ({FLAGS.model} at {size}x{size}, after its optimizations)\n")
    counts = {name: runtime_ops(graph) for name, graph in graphs.items()}
    kinds = sorted(set().union(*counts.values()), key=lambda op: -counts[OURS][op])
    print(benchmark.format_table(["op", *counts],
                                 [[op, *(str(c[op]) for c in counts.values())] for op in kinds]))
    print_op_times(op_times(graphs, size, FLAGS.latency_repeats))
    timings = timing.measure(entries, runtimes=(), batches=(FLAGS.batch, 1),
                             repeats=FLAGS.repeats, latency_repeats=FLAGS.latency_repeats)
    by_key = {(t.model, t.batch): t for t in timings}
    rows = []
    for name in graphs:
        batch, single = by_key[name, FLAGS.batch], by_key[name, 1]
        rows.append([name, f"{batch.images_per_second:.1f}", f"{single.seconds * 1e3:.1f}",
                     f"{batch.seconds / by_key[OURS, FLAGS.batch].seconds:.2f}x",
                     f"{single.seconds / by_key[OURS, 1].seconds:.2f}x"])
    print(f"\n## ONNX Runtime, {os.cpu_count()} threads, median of {FLAGS.repeats} runs at batch "
          f"{FLAGS.batch} and {FLAGS.latency_repeats} at batch 1, interleaved\n")
    print(benchmark.format_table(
        ["graph", f"batch {FLAGS.batch} img/s", "batch 1 ms",
         f"ours faster by (batch {FLAGS.batch})", "ours faster by (batch 1)"], rows))


if __name__ == "__main__":
    app.run(main)
