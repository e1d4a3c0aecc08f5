"""Wall-clock timing of models on the runtimes users deploy to: TF graph mode, XLA and TFLite.

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

tf = require_tensorflow("bl_keras.timing (timing on TF graph, XLA and TFLite)")

RUNTIMES = ("graph", "xla", "tflite")


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


def make_runner(model, runtime, batch, num_threads=None, flatbuffer=None):
    """A function running `model` on `runtime` at `batch`; for TFLite, `flatbuffer` is the
    model's float32 conversion if already made (`bl_keras.export.to_tflite`)."""
    if runtime == "graph":
        return keras_runner(model, jit_compile=False)
    if runtime == "xla":
        return keras_runner(model, jit_compile=True)
    if runtime == "tflite":
        flatbuffer = flatbuffer or export.to_tflite(model)
        return tflite_runner(flatbuffer, batch, num_threads=num_threads)
    raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")


def measure(models, runtimes=RUNTIMES, batches=(16, 1), repeats=10, latency_repeats=50,
            warmup=2, seed=0, num_threads=None, progress=True):
    """Median seconds per batch of each named model on each runtime and batch size.

    Args:
        models: mapping name -> Keras model with a static input size.
        runtimes: subset of `RUNTIMES`.
        batches: batch sizes to time.
        repeats: timed runs per (model, runtime, batch > 1), interleaved across models.
        latency_repeats: the same at batch 1, where runs are short and noise relatively large.
        warmup: untimed runs first (tracing, XLA compilation, allocation).
        num_threads: TFLite threads (None: one per core).

    Returns:
        A list of `Timing`.
    """
    rng = np.random.default_rng(seed)
    results = []
    count = {b: latency_repeats if b == 1 else repeats for b in batches}
    steps = len(runtimes) * len(models) * sum(count[b] + warmup for b in batches)
    bar = tqdm(total=steps, desc="timing", disable=not progress, leave=False)
    flatbuffers = {}  # converted once per model, run at every batch size
    for runtime in runtimes:
        for batch in batches:
            runners = {}
            inputs = {}
            for name, model in models.items():
                shape = (batch, *model.input_shape[1:])
                if any(d is None for d in shape):
                    raise ValueError(f"model {name!r} needs a static input size, got {shape}")
                inputs[name] = rng.uniform(0, 255, shape).astype("float32")
                if runtime == "tflite" and name not in flatbuffers:
                    flatbuffers[name] = export.to_tflite(model)
                runners[name] = make_runner(model, runtime, batch, num_threads,
                                            flatbuffers.get(name))
                for _ in range(warmup):
                    runners[name](inputs[name])
                    bar.update()
            times = {name: [] for name in models}
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
