"""Wall-clock timing of models on the runtimes users deploy to: TF graph mode, XLA, TFLite and
ONNX Runtime. A model from outside this package (the official PyTorch model exported to ONNX)
is timed beside ours as an `External` runner.

Timings of the models being compared are interleaved (model A, model B, model A, ...) so that a
machine that gets busier or quieter during the run affects all of them alike; ratios should only
be taken between timings of one `measure` call.
"""

import dataclasses
import time

import numpy as np
from tqdm.auto import tqdm

from bl_keras import export
from bl_keras._tensorflow import require_tensorflow

tf = require_tensorflow("bl_keras.timing (timing on TF graph, XLA, TFLite and ONNX Runtime)")

RUNTIMES = ("graph", "xla", "tflite", "onnx")


@dataclasses.dataclass(frozen=True)
class External:
    """A model timed on one runtime only, through a runner it brings.

    Attributes:
        runtime: the runtime it is timed on (a label; one of `RUNTIMES` to interleave it with
            our models there).
        input_shape: one example's shape (e.g. (3, 224, 224) for an NCHW model).
        make_runner: batch size -> a function running one batch (a float32 numpy array).
    """

    runtime: str
    input_shape: tuple
    make_runner: object


@dataclasses.dataclass(frozen=True)
class Timing:
    model: str
    runtime: str
    batch: int
    seconds: float  # median seconds per batch over the timed repeats

    @property
    def images_per_second(self):
        return self.batch / self.seconds


def keras_runner(model, jit_compile):
    """A function running `model` in inference mode as one tf.function (optionally XLA)."""
    fn = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)
    return lambda x: fn(x).numpy()


def tflite_runner(flatbuffer, batch, num_threads=None):
    """A function running a TFLite flatbuffer with LiteRT (XNNPACK) at a fixed batch size, on
    `num_threads` threads (default one per core: see `bl_keras.export.interpreter`)."""
    interpreter = export.interpreter(flatbuffer, num_threads)
    detail = interpreter.get_input_details()[0]
    shape = list(detail["shape"])
    if shape[0] != batch:
        interpreter.resize_tensor_input(detail["index"], [batch, *shape[1:]])
    interpreter.allocate_tensors()
    output = interpreter.get_output_details()[0]["index"]

    def run(x):
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return run


def onnx_runner(onnx_model, num_threads=None):
    """A function running an ONNX model (bytes or path) in ONNX Runtime on `num_threads`
    threads (default one per core), without spinning threads (the sessions take turns)."""
    session = export.onnx_session(onnx_model, num_threads, spinning=False)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def convert(model, runtime):
    """The export a runtime runs (`to_tflite` / `to_onnx` bytes), or None for TF graph / XLA."""
    if runtime == "tflite":
        return export.to_tflite(model)
    if runtime == "onnx":
        return export.to_onnx(model)
    return None


def make_runner(model, runtime, batch, num_threads=None, flatbuffer=None):
    """A function running `model` on `runtime` at `batch`; for TFLite and ONNX, `flatbuffer` is
    the model's float32 conversion if already made (`convert`)."""
    if runtime == "graph":
        return keras_runner(model, jit_compile=False)
    if runtime == "xla":
        return keras_runner(model, jit_compile=True)
    if runtime == "tflite":
        return tflite_runner(flatbuffer or convert(model, runtime), batch,
                             num_threads=num_threads)
    if runtime == "onnx":
        return onnx_runner(flatbuffer or convert(model, runtime), num_threads)
    raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")


def measure(models, runtimes=RUNTIMES, batches=(16, 1), repeats=10, latency_repeats=50,
            warmup=2, seed=0, num_threads=None, progress=True):
    """Median seconds per batch of each named model on each runtime and batch size.

    Args:
        models: mapping name -> Keras model with a static input size, or `External` (timed on
            its own runtime only, interleaved with the models timed there).
        runtimes: subset of `RUNTIMES`.
        batches: batch sizes to time.
        repeats: timed runs per (model, runtime, batch > 1), interleaved across models.
        latency_repeats: the same at batch 1, where runs are short and noise relatively large.
        warmup: untimed runs first (tracing, XLA compilation, allocation).
        num_threads: TFLite and ONNX Runtime threads (None: one per core).

    Returns:
        A list of `Timing`.
    """
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"runtimes must be among {RUNTIMES}, got {unknown}")
    rng = np.random.default_rng(seed)
    results = []
    count = {b: latency_repeats if b == 1 else repeats for b in batches}
    external = {name: m for name, m in models.items() if isinstance(m, External)}
    # Keras models on the runtimes asked for; each External on its own (added if not asked).
    timed = {runtime: [name for name in models if name not in external]
             for runtime in runtimes}
    for name, m in external.items():
        timed.setdefault(m.runtime, []).append(name)
    runtimes = list(timed)
    steps = sum(len(names) for names in timed.values()) * sum(count[b] + warmup
                                                                for b in batches)
    bar = tqdm(total=steps, desc="timing", disable=not progress, leave=False)
    converted = {}  # each model converted once per runtime, run at every batch size
    for runtime in runtimes:
        for batch in batches:
            runners = {}
            inputs = {}
            for name in timed[runtime]:
                model = models[name]
                shape = (batch, *(model.input_shape if name in external
                                  else model.input_shape[1:]))
                if any(d is None for d in shape):
                    raise ValueError(f"model {name!r} needs a static input size, got {shape}")
                inputs[name] = rng.uniform(0, 255, shape).astype("float32")
                if name in external:
                    runners[name] = model.make_runner(batch)
                else:
                    if (name, runtime) not in converted:
                        converted[name, runtime] = convert(model, runtime)
                    runners[name] = make_runner(model, runtime, batch, num_threads,
                                                converted[name, runtime])
                for _ in range(warmup):
                    runners[name](inputs[name])
                    bar.update()
            times = {name: [] for name in runners}
            for _ in range(count[batch]):
                for name, run in runners.items():
                    start = time.perf_counter()
                    run(inputs[name])
                    times[name].append(time.perf_counter() - start)
                    bar.update()
            results += [
                Timing(name, runtime, batch, float(np.median(t))) for name, t in times.items()
            ]
    bar.close()
    return results


def best(timings, model, batch):
    """The fastest runtime's timing of `model` at `batch`."""
    candidates = [t for t in timings if t.model == model and t.batch == batch]
    if not candidates:
        raise ValueError(f"no timing of {model!r} at batch {batch}")
    return min(candidates, key=lambda t: t.seconds)
