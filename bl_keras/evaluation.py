"""Evaluating a trained model: accuracy, complexity and latency in one report."""

import keras
import numpy as np

from bl_keras import profile, timing


def outputs_are_probabilities(model):
    """True when the model ends in a softmax (the default head), False for logits."""
    layer = model.layers[-1]
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def accuracy_and_loss(model, dataset, verbose=0):
    """Top-1, top-5 and mean cross-entropy of `model` over a dataset of (images, labels)."""
    correct1 = correct5 = total = 0
    loss_sum = 0.0
    probabilities = outputs_are_probabilities(model)
    progbar = keras.utils.Progbar(None, verbose=verbose, unit_name="batch")
    for images, labels in dataset:
        out = keras.ops.convert_to_numpy(model(images, training=False)).astype(np.float64)
        labels = np.asarray(labels).reshape(-1)
        if not probabilities:
            out = np.exp(out - out.max(axis=1, keepdims=True))
            out /= out.sum(axis=1, keepdims=True)
        k = min(5, out.shape[1])
        top = np.argsort(-out, axis=1)[:, :k]
        correct1 += int((top[:, 0] == labels).sum())
        correct5 += int((top == labels[:, None]).any(axis=1).sum())
        loss_sum += float(-np.log(np.clip(out[np.arange(len(labels)), labels], 1e-12, 1)).sum())
        total += len(labels)
        progbar.add(1)
    if not total:
        raise ValueError("the evaluation data set is empty")
    return {"top1": correct1 / total, "top5": correct5 / total, "loss": loss_sum / total,
            "examples": total}


def as_size(image_size):
    """int or (height, width) -> (height, width)."""
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


def latency_ms(model, image_size, runtime="graph", repeats=30):
    """Median batch-1 latency of `model` at `image_size` (int or (height, width), e.g.
    (64, frames) for a speech model) on a runtime of `bl_keras.timing`."""
    if tuple(model.input_shape[1:3]) != as_size(image_size):
        raise ValueError(f"model input {model.input_shape} is not "
                         f"{'x'.join(map(str, as_size(image_size)))}")
    timings = timing.measure({"model": model}, runtimes=(runtime,), batches=(1,),
                             latency_repeats=repeats, progress=False)
    return timings[0].seconds * 1e3


def evaluate(model, dataset, image_size, latency_runtime="graph", verbose=0):
    """Accuracy on `dataset`, MACs and parameters, and batch-1 latency, as one dict.
    `image_size`: int or (height, width) ((64, frames) for a speech model)."""
    report = accuracy_and_loss(model, dataset, verbose=verbose)
    size = as_size(image_size)
    report["macs"] = profile.count_macs(model, (*size, model.input_shape[-1]))
    report["params"] = profile.count_params(model)
    if None in model.input_shape[1:3]:
        inputs = keras.Input((*size, model.input_shape[-1]))
        fixed = keras.Model(inputs, model(inputs))
    else:
        fixed = model
    report[f"latency_ms_{latency_runtime}"] = latency_ms(fixed, image_size, latency_runtime)
    return report
