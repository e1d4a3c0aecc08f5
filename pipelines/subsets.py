"""Deterministic, disjoint, stratified two-way splits of a data-set split (`Subset`).

An architecture search in the style of DARTS trains the network weights on one part of the
training split (D_a) and the architecture weights on the other (D_b). `Subset(fraction, part)`
holds out `fraction` of every class: `part="b"` is the held-out part, `part="a"` the rest; the
two partition the split. Which examples go where depends only on the examples of the split and
their order as stored, never on `seed`, `training`, shuffling, batching, sharding over input
pipelines (the split is made before sharding) or on bad examples (a bad example just drops out
of the part it is in).

Rounding: class c with n_c examples has exactly floor(fraction * n_c) of them held out (part b),
computed in exact rational arithmetic (`fraction` is read as the nearest fraction p/q with
q <= 10**6, so 0.29 * 100 gives 29, not 28): CIFAR-10's 50,000 training images with
fraction=0.2 give 40,000 / 10,000, 5,000 / 1,000 of each class.

Two ways of choosing, by what is known about the examples up front:

- Labels known up front (in-memory arrays: digits, CIFAR pickles; file lists: `folder:PATH`,
  ImageNet class folders, speech WAV folders): per class, the first floor(fraction * n_c)
  examples of the class in a fixed permutation of the whole split
  (`numpy.random.RandomState(0)`, whose stream numpy keeps stable across versions) are held
  out; the examples keep their stored order. The returned dataset's `num_examples` is the size
  of the part.
- Labels known only per record (TFRecords, prepared TFDS data sets, speech_commands): a
  per-class counter over the whole split in its stored order (TFRecord shards in sorted name
  order, records in file order; TFDS's own order with `shuffle_files=False`), reading only the
  label (nothing is decoded for it): the k-th example (k = 0, 1, ...) of class c is held out
  when floor((k + 1) * fraction) > floor(k * fraction). That holds out the same
  floor(fraction * n_c) per class, spread evenly through the stream. Every input pipeline then
  reads the whole split and keeps its share of the part (sharding by example, not by file), and
  everything before the counter keeps its order (the dataset's `Options.deterministic` is set:
  TFDS's maps follow it; after the split, `deterministic=False` maps may still reorder the
  output, never its membership). `num_examples` is None (the class counts are not known before
  a full pass). A TFRecord whose label cannot be parsed belongs to neither part: it is reported
  (skipped and named in `bad_data`, or raised with `on_error="raise"`) by the pipelines of both
  parts.
"""

import dataclasses
import fractions

import numpy as np
import tensorflow as tf

from pipelines import bad_data

PARTS = ("a", "b")
MAX_DENOMINATOR = 10**6
SPLIT_SEED = 0  # of the permutation that picks the held-out examples; never the `seed` argument
STREAM_FORMS = ("records", "tfds")
MAX_LABEL = 1 << 16  # classes not known: each label in [0, MAX_LABEL) has its own counter

_graph = tf.autograph.experimental.do_not_convert  # plain graph code, no AutoGraph conversion


@dataclasses.dataclass(frozen=True)
class Subset:
    """One part of a deterministic, stratified split of a data-set split (see module doc).

    Args:
        fraction: the fraction of every class held out, in (0, 1): floor(fraction * n_c) of
            class c's n_c examples.
        part: "a" (the examples not held out, ~1 - fraction of each class: D_a, network
            weights) or "b" (the held-out fraction: D_b, architecture weights).
    """

    fraction: float
    part: str

    def __post_init__(self):
        f = self.fraction
        if isinstance(f, bool) or not isinstance(f, (int, float, np.integer, np.floating)) or not (
            0.0 < float(f) < 1.0
        ):
            raise ValueError(f"Subset fraction must be a number in (0, 1), got {f!r}")
        ratio = fractions.Fraction(float(f)).limit_denominator(MAX_DENOMINATOR)
        if not 0 < ratio < 1:
            raise ValueError(f"Subset fraction {f!r} is too close to 0 or 1 (read as {ratio})")
        if self.part not in PARTS:
            raise ValueError(f"Subset part must be 'a' or 'b', got {self.part!r}")

    @property
    def ratio(self):
        """`fraction` as (numerator, denominator) of the nearest fraction with a denominator of at
        most 10**6."""
        ratio = fractions.Fraction(float(self.fraction)).limit_denominator(MAX_DENOMINATOR)
        return ratio.numerator, ratio.denominator

    def held_out_count(self, n):
        """Examples held out (part b) of a class of `n`: floor(fraction * n), exactly."""
        p, q = self.ratio
        return n * p // q


def check(subset):
    """`subset` if it is None or a `Subset`; else a ValueError naming it."""
    if subset is not None and not isinstance(subset, Subset):
        raise ValueError(f"subset must be a pipelines.Subset(fraction, part) or None, got "
                         f"{subset!r}")
    return subset


def held_out_mask(labels, subset):
    """Boolean [N]: which of the examples with these `labels` (known up front) are held out
    (part b) by `subset`: per class, the first floor(fraction * n_c) of the class in a fixed
    permutation (seed `SPLIT_SEED`) of all N."""
    labels = np.asarray(labels).reshape(-1)
    n = len(labels)
    rank = np.empty(n, np.int64)
    rank[np.random.RandomState(SPLIT_SEED).permutation(n)] = np.arange(n)
    order = np.lexsort((rank, labels))  # grouped by class, each class in permutation order
    sorted_labels = labels[order]
    classes, starts, counts = np.unique(sorted_labels, return_index=True, return_counts=True)
    within = np.arange(n) - np.repeat(starts, counts)  # index of each in its class's order
    held = within < np.repeat([subset.held_out_count(int(c)) for c in counts], counts)
    mask = np.zeros(n, bool)
    mask[order] = held
    return mask


def indices(labels, subset):
    """Sorted indices of the examples of `subset`'s part, for labels known up front."""
    mask = held_out_mask(labels, subset)
    return np.flatnonzero(mask if subset.part == "b" else ~mask)


def select(source, subset):
    """The `pipelines.core.Source` restricted to `subset`'s part: in-memory arrays and file
    lists are filtered here (`num_examples` = the part's size); record streams are returned with
    `num_examples` None, to be split by `split_stream`. `subset=None`: `source` itself."""
    if subset is None:
        return source
    if source.form in STREAM_FORMS:
        return dataclasses.replace(source, num_examples=None)
    keep = indices(source.labels, subset)
    labels = np.asarray(source.labels)[keep]
    if source.form == "arrays":
        return dataclasses.replace(source, images=source.images[keep], labels=labels,
                                   num_examples=len(keep))
    if source.form == "files":
        return dataclasses.replace(source, names=[source.names[i] for i in keep],
                                   labels=labels.tolist(), num_examples=len(keep))
    raise ValueError(f"subset is not supported for a source of form {source.form!r}")


def streamed(source, subset):
    """Whether `subset` of `source` is chosen per record by `split_stream`."""
    return subset is not None and source.form in STREAM_FORMS


def keep(dataset, subset, label_of, num_classes=None):
    """The elements of an ordered `dataset` in `subset`'s part, by the per-class counter rule:
    the k-th element of class c is held out when floor((k+1) p / q) > floor(k p / q) (p / q =
    fraction). `label_of(element)` gives the integer label (the element is a tuple). Labels
    outside [0, num_classes] (inclusive: 1-based labels; [0, MAX_LABEL) when `num_classes` is
    None) are bad labels and share one counter. The counts restart with every pass."""
    p, q = subset.ratio
    want_held = subset.part == "b"
    limit = num_classes + 1 if num_classes else MAX_LABEL
    initial = tf.zeros([limit + 1 if num_classes else 1], tf.int64)  # slot 0: bad labels

    @_graph
    def step(counts, element):
        label = tf.cast(label_of(element), tf.int64)
        slot = tf.where((label >= 0) & (label < limit), label + 1, tf.constant(0, tf.int64))
        size = tf.size(counts, out_type=tf.int64)
        counts = tf.pad(counts, [[0, tf.maximum(slot + 1 - size, 0)]])
        k = counts[slot]
        held = (k + 1) * p // q > k * p // q
        return tf.tensor_scatter_nd_add(counts, [[slot]], [1]), (held, element)

    scanned = dataset.scan(initial, step)
    kept = scanned.filter(_graph(lambda held, element: tf.equal(held, want_held)))
    return kept.map(_graph(lambda held, element: element))


_RECORD_LABEL = {"image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1)}


@_graph
def _record_label(name, record):
    """(name, record, label) of an ImageNet-layout record, parsing only the label (-1 when the
    record has none: it then counts among the bad labels and is found bad when decoded)."""
    label = tf.io.parse_single_example(record, _RECORD_LABEL)["image/class/label"]
    return (name, record, label), tf.constant("")


def split_stream(source, subset, on_error="skip", streaming=False, num_classes=None):
    """The ordered examples of a "records" or "tfds" `source` in `subset`'s part, unsharded, as
    `pipelines.core._examples` gives them; and the `BadDataReport` of records whose label could
    not be parsed (None for TFDS). `num_classes`: see `keep` (default: the source's).

    Records are read shard by shard in sorted name order; a record that is not a
    tf.train.Example is a bad example of this step (skipped and reported, or raised)."""
    from pipelines import files

    num_classes = num_classes or source.num_classes
    if source.form == "records":
        report = bad_data.BadDataReport(streaming=streaming)
        records = files.named_records(source.shards, cycle_length=1, deterministic=True)
        named = records.map(_graph(lambda name, record: (name, name, record)))
        labelled = bad_data.guarded_map(named, _record_label, on_error, report,
                                        deterministic=True)
        kept = keep(labelled, subset, lambda e: e[2], num_classes)
        return kept.map(_graph(lambda name, record, label: (name, record))), report
    if source.form != "tfds":
        raise ValueError(f"split_stream is for record streams, not form {source.form!r}")
    dataset = source.dataset
    if source.encoded:
        dataset = dataset.enumerate().map(_graph(
            lambda i, e: (tf.strings.join(["example#", tf.strings.as_string(i)]), *e)))
    return keep(dataset, subset, lambda e: e[-1], num_classes), None


def shard(dataset, input_context):
    """Every n-th example for input pipeline i of n (after the split)."""
    if input_context is None or input_context.num_input_pipelines == 1:
        return dataset
    return dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


def merge_reports(report, split_report):
    """`report`, or one report of both when the split step has its own (`split_stream`)."""
    if split_report is None or report is None:
        return report
    return MergedReport(split_report, report)


class MergedReport(bad_data.Counted):
    """The bad examples of several `BadDataReport`s of one pipeline, as one report
    (`names`, `count`, `warn()`, `streaming`)."""

    def __init__(self, *reports):
        self.reports = reports
        self.streaming = any(r.streaming for r in reports)
        self._warned = set()

    @property
    def names(self):
        return sorted(set().union(*(r.names for r in self.reports)))
