"""MutualNet's query table (seed 003, section 3.2 "Model Inference"): every width-resolution
configuration of a trained slimmable model, its accuracy and its cost, and the best one under
a budget, with no retraining.

>>> table = query_table(model, "cifar10", resolutions=(32, 28, 24), data_dir="/data/cifar",
...                     latency=False)                                  # doctest: +SKIP
>>> best = best_config(table, max_macs=20e6)  # the best top-1 within 20 M MACs # doctest: +SKIP
>>> small = slimmable.subnetwork(model, best["width"],
...                              resolution=best["resolution"])       # doctest: +SKIP

The paper samples widths 0.25x..1.0x in 0.05x steps (`default_widths`) and resolutions
{224, 192, 160, 128}, evaluates every configuration on a validation set and picks the best
under a FLOPs or latency constraint (Fig. 5 plots the resulting accuracy-FLOPs curve).

Each configuration's BatchNorm post-statistics are computed on training images at that
resolution (`calibrated_subnetwork`, `bl_keras.slimmable.calibrate_batch_norm`); the model
keeps them afterwards (they are saved with it), so `subnetwork(model, w, resolution=R)` of any
row needs no calibration again. MACs and parameters are those of `subnetwork(model, w)`
(`bl_keras.profile`), latency the median batch-1 time of its float32 TFLite conversion with
LiteRT on this machine (`bl_keras.timing`).
"""

import collections.abc
import contextlib
import math

import keras
import numpy as np
from tqdm.auto import tqdm

import pipelines
from bl_keras import evaluation, profile, slimmable
from bl_keras.layers.slimmable import SlimmableBatchNormalization, statistics_key

PAPER_RESOLUTIONS = (224, 192, 160, 128)
WIDTH_STEP = slimmable.WIDTH_STEP
width_grid = slimmable.width_grid
ROW_KEYS = ("width", "resolution", "macs", "params", "top1", "latency_ms")
DEFAULT_BATCH_SIZE = 64
_DECIMALS = 6  # as bl_keras.slimmable


# Width lists.


def default_widths(model, step=WIDTH_STEP):
    """The paper's widths for `model`: its whole width range in 0.05 steps (0.25, 0.3, ...,
    1.0 for a [0.25, 1.0] model)."""
    return width_grid(*slimmable.width_range(model), step)


def parse_widths(text):
    """Widths from a string: "MIN:MAX:STEP" (a `width_grid`; "MIN:MAX" steps by 0.05) or a
    comma-separated list "0.25,0.5,1.0". Raises a ValueError quoting `text` otherwise."""
    text = str(text).strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            return width_grid(*parts)
        widths = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"widths must be 'MIN:MAX:STEP' or a list like '0.25,0.5,1.0', got "
                         f"{text!r}") from None
    if not widths:
        raise ValueError(f"widths must be 'MIN:MAX:STEP' or a list like '0.25,0.5,1.0', got "
                         f"{text!r}")
    return widths


def check_widths(model, widths):
    """`widths` (numbers or a `parse_widths` string; None: `default_widths`) as a list of
    floats rounded to 6 decimals, each in the model's range, none repeated."""
    if widths is None:
        return default_widths(model)
    if isinstance(widths, str):
        widths = parse_widths(widths)
    widths = list(widths)
    if not widths:
        raise ValueError("widths is empty: give at least one width")
    checked = [round(slimmable.check_width(model, w), _DECIMALS) for w in widths]
    repeated = sorted({w for w in checked if checked.count(w) > 1})
    if repeated:
        raise ValueError(f"widths repeat {', '.join(f'{w:g}' for w in repeated)}: got "
                         f"{widths!r}")
    return checked


def check_resolutions(model, resolutions):
    """`resolutions` (square sizes) as a list of ints, none repeated
    (`slimmable.check_resolutions`), each one the model accepts (any size for an
    `(None, None, 3)` input, else its own)."""
    resolutions = slimmable.check_resolutions(resolutions)
    static = tuple(model.input_shape[1:3])
    for r in resolutions:
        if static not in ((None, None), (r, r)):
            raise ValueError(f"model {model.name!r} takes {static[0]}x{static[1]} inputs, "
                             f"not resolution {r}: build it with input_shape=(None, None, 3)")
    return resolutions


# Data.


def _is_spec(value):
    return isinstance(value, str)


def _source(data, resolution, what):
    """The batches of `data` (a callable of the resolution or a mapping by resolution)."""
    if isinstance(data, collections.abc.Mapping):
        if resolution not in data:
            raise ValueError(f"{what} has no entry for resolution {resolution} (it has "
                             f"{sorted(data)})")
        return data[resolution]
    return data(resolution)


def _check_data(data, what, resolutions):
    if isinstance(data, collections.abc.Mapping):
        missing = [r for r in resolutions if r not in data]
        if missing:
            raise ValueError(f"{what} has no batches for resolutions {missing} (it has "
                             f"{sorted(data)})")
    elif not (_is_spec(data) or callable(data)):
        raise ValueError(f"{what} must be a data set spec string, a callable resolution -> "
                         f"batches or a mapping {{resolution: batches}}, got {data!r}")


class _Data:
    """The evaluation and calibration batches of each resolution (see `query_table`)."""

    def __init__(self, dataset, calibration, split, data_dir, batch_size, seed, resolutions):
        if not _is_spec(dataset):
            if split is not None:
                raise ValueError(f"split applies to a data set spec string; dataset is a "
                                 f"{type(dataset).__name__}, which gives the batches itself")
            given = [k for k, v in (("data_dir", data_dir), ("batch_size", batch_size))
                     if v is not None]
            if given and not _is_spec(calibration):
                raise ValueError(f"{' and '.join(given)} apply to data set spec strings; "
                                 f"dataset and calibration are a {type(dataset).__name__} "
                                 f"and a {type(calibration).__name__}")
        if calibration is None:
            if not _is_spec(dataset):
                raise ValueError("calibration is needed when dataset is not a spec string: a "
                                 "callable resolution -> training batches (with training "
                                 "augmentation) or a mapping {resolution: batches}")
            calibration = dataset
        for data, what in ((dataset, "dataset"), (calibration, "calibration")):
            _check_data(data, what, resolutions)
            if _is_spec(data):
                pipelines.parse_spec(data)
        if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.dataset, self.calibration = dataset, calibration
        self.split = "val" if split is None else split
        self.data_dir, self.seed = data_dir, seed
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE

    def _get(self, spec, split, resolution, training):
        return pipelines.get_dataset(spec, split, resolution, self.batch_size, training,
                                     data_dir=self.data_dir, seed=self.seed)

    def evaluation(self, resolution):
        if _is_spec(self.dataset):
            return self._get(self.dataset, self.split, resolution, training=False)
        return _source(self.dataset, resolution, "dataset")

    def training(self, resolution):
        if _is_spec(self.calibration):
            return self._get(self.calibration, "train", resolution, training=True)
        return _source(self.calibration, resolution, "calibration")


def top1(model, batches, resolution=None):
    """Top-1 accuracy of `model` (logits or probabilities) over batches of (images, integer
    labels), in inference mode; `resolution` checks the images' size."""
    correct = total = 0
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("evaluation batches must be (images, labels)")
        images, labels = batch[0], batch[1]
        if resolution is not None and tuple(images.shape[1:3]) != (resolution, resolution):
            raise ValueError(f"evaluation batches for resolution {resolution} have images of "
                             f"shape {tuple(images.shape)}")
        out = keras.ops.convert_to_numpy(model(images, training=False))
        labels = np.asarray(labels).reshape(-1)
        correct += int((np.argmax(out, axis=-1) == labels).sum())
        total += len(labels)
    if not total:
        raise ValueError(f"the evaluation batches at resolution {resolution} are empty")
    return correct / total


# Configurations.


def calibrated_subnetwork(model, width, resolution, batches,
                          num_images=slimmable.DEFAULT_CALIBRATION_IMAGES, name=None):
    """`subnetwork(model, width)` with BatchNorm post-statistics freshly computed at
    (`width`, `resolution`) from `batches` (training images of that size, training
    augmentation, as the paper): the deployable model of one configuration.

    Args:
        model: a trained slimmable model.
        width: a width in its range.
        resolution: the square input size (int) the configuration runs at.
        batches: training batches (images or (images, labels)) at `resolution`.
        num_images: calibration images (about 2,000 suffice).
        name: name of the returned model.

    Returns:
        A plain Keras model (its input size is the slimmable model's, often dynamic). `model`
        keeps the new statistics and its previous width.
    """
    with _keeping_width(model):
        slimmable.calibrate_batch_norm(model, batches, width=width, num_images=num_images)
        key = statistics_key(width, (resolution, resolution))
        made = {layer.active_key for layer in slimmable.slimmable_layers(model)
                if isinstance(layer, SlimmableBatchNormalization)}
        if made != {key}:
            sizes = ", ".join(f"{r[0]}x{r[1]}" for _, r in made if r is not None)
            raise ValueError(f"calibration batches for resolution {resolution} are not "
                             f"{resolution}x{resolution}: got {sizes or 'unknown sizes'}")
        return slimmable.subnetwork(model, width, resolution=(resolution, resolution),
                                    name=name)


@contextlib.contextmanager
def _keeping_width(model):
    """Restores the model's width and each BatchNorm's active statistics on exit."""
    layers = slimmable.slimmable_layers(model)
    saved = [(layer.width, getattr(layer, "active_key", None)) for layer in layers]
    try:
        yield
    finally:
        for layer, (width, key) in zip(layers, saved):
            layer.width = width
            if isinstance(layer, SlimmableBatchNormalization):
                layer.select_statistics(*(key if key is not None else (width,)))
        slimmable.reset_compiled_functions(model)


def _fixed_size(model, resolution):
    """`model` with a static resolution x resolution input (TFLite needs one)."""
    if tuple(model.input_shape[1:3]) == (resolution, resolution):
        return model
    inputs = keras.Input((resolution, resolution, model.input_shape[-1]))
    return keras.Model(inputs, model(inputs), name=model.name)


def query_table(model, dataset, widths=None, resolutions=PAPER_RESOLUTIONS, *,
                calibration=None, split=None, data_dir=None, batch_size=None,
                num_calibration_images=slimmable.DEFAULT_CALIBRATION_IMAGES, latency=True,
                latency_repeats=30, seed=0, progress=True):
    """MutualNet's query table: accuracy and cost of every (width, resolution)
    configuration of a trained slimmable model.

    For each resolution R (outer loop, in the given order) and width w (inner loop), the
    BatchNorm post-statistics of (w, R) are computed on training images at R, top-1 is
    measured on the evaluation batches at R, and the cost is that of `subnetwork(model, w)`
    at RxR.

    Data, either way:
    - Spec strings (`pipelines.get_dataset`): `dataset="digits"` (or "cifar10" with
      `data_dir`, ...) evaluates on its `split` (default "val"; pass "test" only knowingly)
      and calibrates on its "train" split with training augmentation, `batch_size` images a
      batch (default 64), both built at each resolution. `calibration` may name another spec
      for the training images.
    - Your own: `dataset` and `calibration` are each a callable `resolution -> batches` or a
      mapping `{resolution: batches}`; evaluation batches are (images, integer labels) at
      RxR, calibration batches images or (images, labels) at RxR from the training data with
      training augmentation (any iterable, e.g. a `tf.data.Dataset`). `calibration` is then
      required, and `split`, `data_dir`, `batch_size` (which shape spec data sets only) must
      stay unset unless `calibration` is a spec.

    Args:
        model: a trained slimmable model (`bl_keras.slimmable`), input `(None, None, 3)`
            unless only its own size is queried.
        dataset: evaluation data, see above.
        widths: numbers, a `parse_widths` string ("0.25:1.0:0.05", "0.25,0.5"), or None for
            the model's whole range in 0.05 steps (`default_widths`).
        resolutions: square input sizes (default the paper's 224, 192, 160, 128).
        calibration: training data for the BatchNorm statistics, see above.
        split, data_dir, batch_size: of spec data sets, see above.
        num_calibration_images: training images per configuration's statistics.
        latency: measure the batch-1 float32 TFLite latency (LiteRT, one thread per core) of
            each configuration on this machine; False: `latency_ms` is None (much faster).
        latency_repeats: timed runs per configuration (the median is reported).
        seed: shuffling / augmentation seed of spec calibration data.
        progress: a progress bar over the configurations.

    Returns:
        A list of rows, one per configuration, each a dict with exactly the keys `width`
        (float), `resolution` (int), `macs` (int, per image), `params` (int, trainable),
        `top1` (fraction in [0, 1]), `latency_ms` (float or None). The model keeps the
        statistics it was calibrated with (so `subnetwork(model, w, resolution=R)` works for
        every row) and its previous width.

    Raises:
        ValueError, before any work: empty or repeated widths or resolutions, a width outside
        the model's range, a resolution the model does not take, or data arguments that do
        not fit together.
    """
    widths = check_widths(model, widths)
    resolutions = check_resolutions(model, resolutions)
    if num_calibration_images is not None and (
            isinstance(num_calibration_images, bool) or num_calibration_images < 1):
        raise ValueError(f"num_calibration_images must be a positive integer or None, got "
                         f"{num_calibration_images!r}")
    if latency_repeats < 1:
        raise ValueError(f"latency_repeats must be positive, got {latency_repeats!r}")
    data = _Data(dataset, calibration, split, data_dir, batch_size, seed, resolutions)
    channels = model.input_shape[-1]
    rows = []
    bar = tqdm(total=len(widths) * len(resolutions), desc="query table", unit="config",
               disable=not progress)
    try:
        for resolution in resolutions:
            evaluation_batches = data.evaluation(resolution)
            for width in widths:
                bar.set_postfix(width=f"{width:g}", resolution=resolution)
                # Fresh calibration batches per configuration (a data set iterated again is
                # shuffled and augmented anew): a row does not depend on the rows before it,
                # and equals what `calibrated_subnetwork` gives that configuration alone.
                sub = calibrated_subnetwork(model, width, resolution, data.training(resolution),
                                            num_calibration_images)
                row = {
                    "width": width,
                    "resolution": resolution,
                    "macs": profile.count_macs(sub, (resolution, resolution, channels)),
                    "params": profile.count_params(sub),
                    "top1": top1(sub, evaluation_batches, resolution),
                    "latency_ms": None,
                }
                if latency:
                    row["latency_ms"] = evaluation.latency_ms(
                        _fixed_size(sub, resolution), resolution, runtime="tflite",
                        repeats=latency_repeats)
                rows.append(row)
                bar.update()
    finally:
        bar.close()
    return rows


# Choosing.


def _check_table(table):
    table = list(table)
    if not table:
        raise ValueError("the query table is empty")
    for row in table:
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"query table rows need the keys {ROW_KEYS}; a row lacks "
                             f"{missing}: {row!r}")
    return table


def _describe(row):
    return f"width {row['width']:g} at {row['resolution']}"


def best_config(table, max_macs=None, max_latency_ms=None):
    """The configuration with the best top-1 within the budgets (ties: fewer MACs, then
    lower latency), as in the paper's query table.

    Args:
        table: rows of `query_table` (or their JSON).
        max_macs: largest MACs per image allowed (None: no limit).
        max_latency_ms: largest latency allowed; only rows with a measured latency qualify.

    Returns:
        That row (a copy).

    Raises:
        ValueError: no row fits (naming the cheapest available cost), or `max_latency_ms`
            given while no row has a latency.
    """
    table = _check_table(table)
    candidates = table
    if max_macs is not None:
        candidates = [r for r in candidates if r["macs"] <= max_macs]
        if not candidates:
            cheapest = min(table, key=lambda r: r["macs"])
            raise ValueError(f"no configuration within max_macs={max_macs:g}: the smallest, "
                             f"{_describe(cheapest)}, needs {cheapest['macs']:,} MACs")
    if max_latency_ms is not None:
        timed = [r for r in table if r["latency_ms"] is not None]
        if not timed:
            raise ValueError(f"max_latency_ms={max_latency_ms:g} needs latencies, but no row "
                             "has latency_ms (the table was made with latency=False)")
        within = [r for r in candidates
                  if r["latency_ms"] is not None and r["latency_ms"] <= max_latency_ms]
        if not within:
            pool = [r for r in candidates if r["latency_ms"] is not None] or timed
            fastest = min(pool, key=lambda r: r["latency_ms"])
            also = "" if max_macs is None else f" (and max_macs={max_macs:g})"
            raise ValueError(f"no configuration within max_latency_ms={max_latency_ms:g}"
                             f"{also}: the fastest, {_describe(fastest)}, takes "
                             f"{fastest['latency_ms']:.3g} ms")
        candidates = within
    best = min(candidates, key=lambda r: (-r["top1"], r["macs"],
                                          math.inf if r["latency_ms"] is None
                                          else r["latency_ms"]))
    return dict(best)


def non_dominated(rows, cost, score="top1"):
    """The rows better in `score` than every cheaper row (by `cost`), cheapest first: the
    Pareto front of score against cost. Rows whose cost or score is None are left out."""
    rows = [r for r in rows if r.get(cost) is not None and r.get(score) is not None]
    front, best = [], -math.inf
    for row in sorted(rows, key=lambda r: (r[cost], -r[score])):
        if row[score] > best:
            front.append(dict(row))
            best = row[score]
    return front


def pareto_front(table, cost="macs"):
    """The configurations `best_config` picks as the budget on `cost` ("macs" or
    "latency_ms") shrinks: rows better in top-1 than every cheaper row, cheapest first (the
    curve of the paper's Fig. 5)."""
    if cost not in ("macs", "latency_ms"):
        raise ValueError(f"cost must be 'macs' or 'latency_ms', got {cost!r}")
    return non_dominated(_check_table(table), cost)


__all__ = [
    "PAPER_RESOLUTIONS",
    "ROW_KEYS",
    "WIDTH_STEP",
    "best_config",
    "calibrated_subnetwork",
    "check_resolutions",
    "check_widths",
    "default_widths",
    "non_dominated",
    "pareto_front",
    "parse_widths",
    "query_table",
    "top1",
    "width_grid",
]
