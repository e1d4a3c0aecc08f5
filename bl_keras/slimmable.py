"""Width-resolution mutual learning (MutualNet, seed 003) on universally slimmable networks.

One set of weights runs at any width of the model's range and at any input resolution:

>>> model = bl_keras.models.get("us_mobilenet_v1")()            # width range [0.25, 1.0]
>>> slimmable.calibrate_batch_norm(model, train_batches_at_160, width=0.5)
>>> slimmable.set_width(model, 0.5)                              # every call path follows
>>> model.predict(images_at_160)
>>> small = slimmable.subnetwork(model, 0.5)                     # ordinary Keras layers
>>> small.export("mobilenet_0.5_160")

- Layers: `bl_keras.layers.slimmable` (`SlimmableConv2D`, `SlimmableDepthwiseConv2D`,
  `SlimmableDense`, `SlimmableBatchNormalization`), channel rule `slim_channels`.
- Models: `us_mobilenet_v1`, `us_mobilenet_v2`, `us_resnet*_cifar`, `us_bl_resnet*_cifar`
  (`bl_keras.models`).
- Training step: `bl_keras.training.methods.MutualLearning` (the sandwich rule, inplace
  distillation, one resolution per sub-network), run by `fit` and the distributed loop.
- Deployment: `calibrate_batch_norm` (post-statistics), `subnetwork`, `query_table`,
  `best_config`.
"""

import contextlib
import math

import keras
import numpy as np

from bl_keras.layers.slimmable import (
    SLIMMABLE_LAYERS,
    SlimmableBatchNormalization,
    SlimmableLayer,
    make_divisible,
    slim_channels,
)

DEFAULT_CALIBRATION_IMAGES = 2000  # US-Net: about 2,000 images give accurate statistics
WIDTH_STEP = 0.05  # the paper's query-table step
_DECIMALS = 6  # widths are rounded to this many decimals (the BatchNorm statistics' key)
_TOLERANCE = 1e-9


def width_grid(low, high, step=WIDTH_STEP):
    """Widths from `low` to `high` in `step`s, both ends included (`high` is appended where
    the steps do not land on it), rounded to 6 decimals so that 0.25 + 3 * 0.05 is 0.4."""
    low, high, step = float(low), float(high), float(step)
    if not 0 < low <= high:
        raise ValueError(f"width grid needs 0 < min <= max, got min {low!r} and max {high!r}")
    if not step > 0:
        raise ValueError(f"width step must be positive, got {step!r}")
    count = math.floor((high - low) / step + 1e-9)
    widths = [round(low + i * step, _DECIMALS) for i in range(count + 1)]
    if widths[-1] < round(high, _DECIMALS):
        widths.append(round(high, _DECIMALS))
    return widths


def check_resolutions(resolutions):
    """`resolutions` (square sizes, any order) as a list of ints, or a ValueError: empty,
    not positive integers, or repeated."""
    if isinstance(resolutions, (int, np.integer)):
        resolutions = [resolutions]
    resolutions = list(resolutions or ())
    if not resolutions:
        raise ValueError("resolutions is empty: give at least one input size")
    for r in resolutions:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
            raise ValueError(f"resolutions must be positive integers (square sizes), got "
                             f"{r!r} in {resolutions!r}")
    resolutions = [int(r) for r in resolutions]
    repeated = sorted({r for r in resolutions if resolutions.count(r) > 1})
    if repeated:
        raise ValueError(f"resolutions repeat {repeated}: got {resolutions!r}")
    return resolutions


def slimmable_layers(model):
    """Every slimmable layer of `model` (nested ones included), in graph order."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, SlimmableLayer)]


def _batch_norms(model):
    return [layer for layer in slimmable_layers(model)
            if isinstance(layer, SlimmableBatchNormalization)]


def _layers_or_raise(model):
    layers = slimmable_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no slimmable layers")
    return layers


def width_range(model):
    """The (min, max) widths `model` runs at (its slimmable layers' common range)."""
    ranges = {layer.width_range for layer in _layers_or_raise(model)}
    if len(ranges) > 1:
        raise ValueError(f"model {model.name!r} mixes width ranges {sorted(ranges)}")
    return ranges.pop()


def get_width(model):
    """The width `model` currently runs at."""
    widths = {layer.width for layer in _layers_or_raise(model)}
    if len(widths) > 1:
        raise ValueError(f"model {model.name!r} runs its layers at different widths "
                         f"{sorted(widths)}: call set_width")
    return widths.pop()


def check_width(model, width):
    """`width` as a float, or a ValueError naming the model's range or the layer it cannot
    run."""
    if isinstance(width, bool) or not isinstance(width, (int, float, np.floating,
                                                         np.integer)):
        raise ValueError(f"width must be a number, got {width!r}")
    low, high = width_range(model)
    if not low - _TOLERANCE <= width <= high + _TOLERANCE:
        raise ValueError(f"width {width:g} is outside the range [{low:g}, {high:g}] of "
                         f"model {model.name!r}")
    width = float(min(max(width, low), high))
    for layer in slimmable_layers(model):
        layer.check_width(width)
    return width


def set_width(model, width, resolution=None):
    """Runs the whole model at `width` from now on: eager calls, `predict`, `evaluate`,
    `fit` (the model's compiled functions are dropped, so the next call traces at the new
    width, with `jit_compile=True` too).

    Args:
        model: a model with slimmable layers.
        width: any width in the model's range (ValueError naming the range otherwise).
        resolution: (height, width) or a size whose BatchNorm statistics inference should
            use, where the width was calibrated at several; default: the width's only one.

    A `tf.function` of your own that calls the model keeps the width it was traced at.
    """
    width = check_width(model, width)
    resolution = _resolution(resolution)
    for layer in slimmable_layers(model):
        layer.width = width
        if isinstance(layer, SlimmableBatchNormalization) and layer.built:
            layer.select_statistics(width, resolution)
    reset_compiled_functions(model)
    return model


def reset_compiled_functions(model):
    """Drops `fit`/`evaluate`/`predict`'s traced functions so the next call retraces."""
    for name in ("train_function", "test_function", "predict_function"):
        if hasattr(model, name):
            setattr(model, name, None)


def _resolution(resolution):
    if resolution is None:
        return None
    if isinstance(resolution, (int, np.integer)):
        return (int(resolution), int(resolution))
    resolution = tuple(int(r) for r in resolution)
    if len(resolution) != 2:
        raise ValueError(f"resolution must be a size or (height, width), got {resolution!r}")
    return resolution


@contextlib.contextmanager
def using_width(model, width):
    """Within the block, every slimmable layer of `model` runs at `width`, which may be a
    scalar tensor: on the TensorFlow backend (without XLA) one traced graph then serves every
    width. The Python width `set_width` set is left as it was."""
    layers = _layers_or_raise(model)
    previous = [layer._scoped_width for layer in layers]
    for layer in layers:
        layer._scoped_width = width
    try:
        yield
    finally:
        for layer, old in zip(layers, previous):
            layer._scoped_width = old


def _images(batch):
    if isinstance(batch, dict):
        raise ValueError("calibrate_batch_norm takes batches of images or (images, labels), "
                         "got a dict")
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if isinstance(batch, (tuple, list)):
        raise ValueError("calibrate_batch_norm got a tuple of images (a multi-resolution "
                         "batch): pass the batches of one resolution")
    return batch


def calibrate_batch_norm(model, batches, width=None, num_images=DEFAULT_CALIBRATION_IMAGES,
                         verbose=False):
    """The post-statistics of US-Nets / MutualNet (`ComputePostBN.py`): every slimmable
    BatchNorm's statistics are reset, then each batch's per-channel mean and unbiased
    variance (the model runs in training mode, normalising with batch statistics as the
    official code) are averaged with equal weight.

    Args:
        model: a model with slimmable BatchNorm layers.
        batches: an iterable of image batches or (images, labels[, weights]) batches, or a
            `tf.data.Dataset` of them, all at one resolution: the statistics belong to that
            resolution (use training images with training augmentation, as the paper).
        width: the width to calibrate (`set_width` first); default the model's current one.
        num_images: stop after this many images (about 2,000 suffice: US-Net); None: all.
        verbose: show a progress bar.

    Returns:
        The number of images used. The statistics are saved with the model and carried by
        `subnetwork`; calibrating again at the same width and resolution replaces them.
    """
    if width is not None:
        set_width(model, width)
    width = get_width(model)
    norms = _batch_norms(model)
    if not norms:
        raise ValueError(f"model {model.name!r} has no slimmable BatchNormalization layers")
    if num_images is not None and (isinstance(num_images, bool) or num_images < 1):
        raise ValueError(f"num_images must be a positive integer or None, got {num_images!r}")
    progress = keras.utils.Progbar(num_images, unit_name="image") if verbose else None
    seen, resolution = 0, None
    for layer in norms:
        layer.begin_calibration()
    try:
        for batch in batches:
            images = _images(batch)
            shape = tuple(images.shape)
            if len(shape) != 4:
                raise ValueError(f"calibration batches must be [batch, height, width, "
                                 f"channels], got shape {shape}")
            if resolution is None:
                resolution = shape[1:3]
            elif shape[1:3] != resolution:
                raise ValueError(f"calibration batches must share one resolution: got "
                                 f"{shape[1]}x{shape[2]} after {resolution[0]}x{resolution[1]}")
            model(images, training=True)
            seen += shape[0]
            if progress is not None:
                progress.update(min(seen, num_images or seen))
            if num_images is not None and seen >= num_images:
                break
        if not seen:
            raise ValueError("calibrate_batch_norm got no batches")
        for layer in norms:
            layer.end_calibration(width, resolution)
    finally:
        for layer in norms:
            layer.abort_calibration()
    reset_compiled_functions(model)
    return seen


def calibrated(model):
    """The (width, (height, width)) pairs with BatchNorm statistics in every layer."""
    keys = None
    for layer in _batch_norms(model):
        keys = set(layer.statistics) if keys is None else keys & set(layer.statistics)
    return sorted(keys or (), key=str)


def subnetwork(model, width, resolution=None, name=None, require_statistics=True):
    """A standalone model of ordinary Keras layers (Conv2D, DepthwiseConv2D, Dense,
    BatchNormalization) equal to `model` at `width`: the sliced weights and the BatchNorm
    statistics calibrated for that width (and `resolution`, where it has several). It saves
    as `.keras`, exports like any model, and `profile.count_macs` / `count_params` on it give
    that configuration's cost. `model` keeps its width and statistics.

    `require_statistics=False` also slices a width that has no calibrated statistics yet (its
    BatchNorm layers then hold whatever statistics are active): a network to time or count,
    not to evaluate."""
    layers = _layers_or_raise(model)
    saved = [(layer.width, getattr(layer, "active_key", None)) for layer in layers]
    try:
        set_width(model, width, resolution)
        for layer in _batch_norms(model) if require_statistics else ():
            if layer.missing is not None:
                raise ValueError(f"subnetwork({width:g}): layer {layer.name!r}: "
                                 f"{layer.missing}")
        width = get_width(model)

        def clone(layer):
            if isinstance(layer, SLIMMABLE_LAYERS):
                return layer.plain_layer(width)
            return layer.__class__.from_config(layer.get_config())

        plain = keras.models.clone_model(model, clone_function=clone)
        for source in model.layers:
            if not source.weights:
                continue
            target = plain.get_layer(source.name)
            values = source.get_weights()
            target.set_weights([value[tuple(slice(0, n) for n in target_value.shape)]
                                for value, target_value in zip(values, target.get_weights())])
        plain.name = name or f"{model.name}_{width:g}"
    finally:
        for layer, (old_width, key) in zip(layers, saved):
            layer.width = old_width
            if isinstance(layer, SlimmableBatchNormalization):
                if key is not None:
                    layer.select_statistics(*key)
                else:
                    layer.select_statistics(old_width)
        reset_compiled_functions(model)
    return plain


def __getattr__(name):
    # `query_table` and `best_config` (bl_keras.query_table, which builds on this module),
    # re-exported lazily and kept out of __all__: they need data pipelines and TFLite, which
    # the layers do not.
    if name in ("best_config", "query_table"):
        from bl_keras import query_table as table

        return getattr(table, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_CALIBRATION_IMAGES",
    "calibrate_batch_norm",
    "calibrated",
    "check_resolutions",
    "check_width",
    "get_width",
    "make_divisible",
    "reset_compiled_functions",
    "set_width",
    "slim_channels",
    "slimmable_layers",
    "subnetwork",
    "using_width",
    "width_grid",
    "width_range",
]
