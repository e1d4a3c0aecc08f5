"""Every registered model through `bl_keras.export.to_onnx`, checked in ONNX Runtime.

    python benchmarks/onnx_every_model.py                   # all, ~25 min on 2 cores
    python benchmarks/onnx_every_model.py --models=bl_resnet50,us_mobilenet_v1

Each model is built at a small input (ImageNet models at --imagenet_size, CIFAR-size ones at
32, speech models at 64 x --frames, multi-resolution ones at 32) with perturbed BatchNorm
statistics, exported, and run in ONNX Runtime on random inputs at batches of 3 and 1 against
Keras: the table gives the export time, the largest absolute output difference and the top-1
agreement (of logits where the builder takes `classifier_activation=None`). Slimmable models
export a sub-network (`bl_keras.slimmable.subnetwork`) at their smallest width, as
`apps.export --width` does. Exits non-zero if any model fails or differs by more than
--tolerance.
"""

import gc
import sys
import time

import keras
import numpy as np
from absl import app, flags
from tqdm.auto import tqdm

from bl_keras import benchmark, export, models, slimmable

FLAGS = flags.FLAGS
flags.DEFINE_list("models", None, "Models to export (default: every registered one).")
flags.DEFINE_integer("imagenet_size", 64, "Input size of the ImageNet models.")
flags.DEFINE_integer("frames", 56, "Frames of the speech models' windows.")
flags.DEFINE_float("tolerance", 1e-4, "Largest allowed absolute output difference.")


def input_shape(name):
    if name.endswith("_speech"):
        return (64, FLAGS.frames, 3)
    if "cifar" in name or name.startswith("multires"):
        return (32, 32, 3)
    return (FLAGS.imagenet_size, FLAGS.imagenet_size, 3)


def perturb(model, seed=0):
    """BatchNorm statistics away from (0, 1), so folding them is checked too."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for variable in layer.non_trainable_weights:
            if "moving_mean" in variable.path or "moving_variance" in variable.path:
                shape = tuple(variable.shape)
                value = (rng.normal(0, 0.1, shape) if "mean" in variable.path
                         else rng.uniform(0.5, 1.5, shape))
                variable.assign(value.astype(variable.dtype))


def check(name):
    shape = input_shape(name)
    try:  # logits where the builder has the option: differences not squashed by a softmax
        model = models.get(name, input_shape=shape, classifier_activation=None)
    except TypeError:
        model = models.get(name, input_shape=shape)
    if slimmable.slimmable_layers(model):
        low, _ = slimmable.width_range(model)
        model = slimmable.subnetwork(model, low, require_statistics=False)
    perturb(model)
    start = time.perf_counter()
    onnx_model = export.to_onnx(model)
    seconds = time.perf_counter() - start
    rng = np.random.default_rng(1)
    if name.endswith("_speech"):
        x = rng.normal(size=(4, *shape)).astype(np.float32)
    else:
        x = rng.uniform(0, 255, (4, *shape)).astype(np.float32)
    result = export.parity(model, onnx_model, x, batch_size=3)
    return [name, "x".join(map(str, shape[:2])), f"{seconds:.1f}",
            f"{result['max_abs_diff']:.2g}", f"{result['top1_agreement']:.0%}"], result


def main(argv):
    del argv
    names = FLAGS.models or models.list_models()
    rows, failed = [], []
    bar = tqdm(names, desc="to_onnx")
    for name in bar:
        try:
            row, result = check(name)
            if result["max_abs_diff"] > FLAGS.tolerance or result["top1_agreement"] < 1:
                failed.append(name)
        except Exception as error:  # report every model, then fail
            row = [name, "-", "-", f"FAILED: {type(error).__name__}: {error}"[:120], "-"]
            failed.append(name)
        rows.append(row)
        bar.write(" | ".join(row), file=sys.stdout)  # a run cut short keeps its rows
        keras.backend.clear_session()  # the largest models' graphs would pile up (OOM at 24 GB)
        gc.collect()
    print(benchmark.format_table(["model", "input", "export s", "max abs diff", "top-1 agree"],
                                 rows))
    print(f"\n{len(names) - len(failed)} of {len(names)} models export and agree within "
          f"{FLAGS.tolerance:g}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    app.run(main)
