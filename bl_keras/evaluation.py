"""Evaluating a trained model: accuracy, complexity and latency in one report."""

import keras
import numpy as np

import pipelines
from bl_keras import export, profile, timing
from pipelines.speech import window_frames


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


def accuracy_unit(speech, labels="utterance"):
    """What top-1 counts: "images", or for a speech model "utterances" or "frames"."""
    if not speech:
        return "images"
    return "frames" if labels == "frame" else "utterances"


def model_dataset(model, spec, split, batch_size, *, data_dir=None, image_size=None,
                  labels="utterance", num_frames=None, num_classes=None):
    """The evaluation pipeline (`pipelines.get_dataset`, not training) of inputs that fit
    `model`, and their (height, width).

    Image models: square images of `image_size` (default: the model's static size). Speech
    models (`export.takes_features`): 49-frame windows for `labels="frame"`, or utterance
    windows of `num_frames` (default: the model's static length). Raises a ValueError naming
    the argument when the size is not given and the model does not fix it, or does not fit it.
    """
    common = dict(training=False, data_dir=data_dir, num_classes=num_classes)
    if export.takes_features(model):
        if image_size is not None:
            raise ValueError(f"image_size={image_size!r} is for image models; this speech model "
                             f"takes 64 mel bins x num_frames")
        model_frames = model.input_shape[2]
        requested = num_frames or (None if labels == "frame" else model_frames)
        if labels == "utterance" and requested is None:
            raise ValueError("the model takes any number of frames: give num_frames")
        frames = window_frames(labels, requested)
        if model_frames not in (None, frames):
            raise ValueError(f"the model takes {model_frames}-frame windows, not {frames} "
                             f"(labels={labels!r}, num_frames={num_frames!r})")
        dataset = pipelines.get_dataset(spec, split, None, batch_size, labels=labels,
                                        num_frames=frames, **common)
        return dataset, (model.input_shape[1], frames)
    if num_frames is not None:
        raise ValueError(f"num_frames={num_frames!r} is for speech models; give image_size")
    size = image_size or model.input_shape[1]
    if size is None:
        raise ValueError("the model takes any size: give image_size")
    if model.input_shape[1:3] not in ((None, None), (size, size)):
        raise ValueError(f"the data pipelines make square images of {size}; the model takes "
                         f"{model.input_shape[1]}x{model.input_shape[2]}")
    return pipelines.get_dataset(spec, split, size, batch_size, **common), (size, size)


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
