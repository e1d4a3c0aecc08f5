"""`get_dataset`: one entry point from a data-set spec string to a batched `tf.data.Dataset`."""

import dataclasses
import glob
import os

import numpy as np
import tensorflow as tf

from pipelines import bad_data, files, preprocess, subsets

SPEC_KINDS = ("digits", "cifar10", "cifar100", "imagenet", "folder", "tfrecord", "speech",
              "speech_commands")
SPEECH_KINDS = ("speech", "speech_commands")
_PATH_KINDS = ("folder", "tfrecord", "speech")
IMAGE_SHUFFLE_BUFFER = 10_000
SPLIT_ALIASES = {"val": ("val", "validation"), "validation": ("validation", "val")}


@dataclasses.dataclass(frozen=True)
class DataSpec:
    kind: str  # one of SPEC_KINDS
    path: str | None = None  # folder of `folder:PATH` / `speech:PATH`, glob of `tfrecord:GLOB`

    @property
    def is_speech(self):
        """Audio data (log-mel windows [64, frames, 3]) rather than images."""
        return self.kind in SPEECH_KINDS


def parse_spec(spec):
    """'digits' | 'cifar10' | 'cifar100' | 'imagenet' | 'folder:PATH' | 'tfrecord:GLOB' |
    'speech:PATH' | 'speech_commands'."""
    kind, _, path = str(spec).partition(":")
    if kind not in SPEC_KINDS or (kind in _PATH_KINDS) != bool(path):
        raise ValueError(
            f"unknown data set {spec!r}: expected one of digits, cifar10, cifar100, imagenet, "
            "folder:PATH, tfrecord:GLOB, speech:PATH, speech_commands"
        )
    return DataSpec(kind, path or None)


@dataclasses.dataclass
class Source:
    """Examples before preprocessing, in one of four forms (`form`):

    - "arrays": `images` uint8 [N, H, W, 3] and `labels` in memory (digits, CIFAR pickles);
    - "files": `names` (paths) and `labels` of image files, read and decoded in the pipeline;
    - "records": TFRecord `shards` in the ImageNet layout;
    - "tfds": a prepared TFDS `dataset` of (image, label), images `encoded` or decoded.
    """

    form: str
    num_classes: int | None
    images: np.ndarray | None = None
    labels: list | np.ndarray | None = None
    names: list | None = None
    shards: list | None = None
    dataset: tf.data.Dataset | None = None
    encoded: bool = False  # for a TFDS dataset: images still encoded
    num_examples: int | None = None


def _existing_split_dir(root, split):
    for name in SPLIT_ALIASES.get(split, (split,)):
        if os.path.isdir(os.path.join(root, name)):
            return name
    return None


def open_source(spec, split, data_dir=None, image_size=32, seed=0, one_based_labels=False,
                input_context=None):
    """The examples of `split` of the data set `spec` (see `parse_spec`), never downloading."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.kind == "digits":
        from pipelines import digits

        images, labels = digits.load_digits_split(split, image_size=image_size, seed=seed)
        return Source("arrays", digits.NUM_CLASSES, images=images, labels=labels,
                      num_examples=len(labels))
    if spec.kind == "folder":
        return _folder_source(spec.path, split)
    if spec.kind == "tfrecord":
        return Source("records", None, shards=files.tfrecord_files(spec.path))
    if data_dir is None:
        raise ValueError(f"data set {spec.kind!r} needs data_dir (a prepared copy; nothing is "
                         "downloaded)")
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir!r} does not exist")
    if spec.kind in ("cifar10", "cifar100"):
        return _cifar_source(spec.kind, split, data_dir, input_context)
    return _imagenet_source(split, data_dir, one_based_labels, input_context)


def _folder_source(root, split):
    split_dir = _existing_split_dir(root, split) or split
    names, labels, class_names = files.list_image_folder(root, split_dir)
    for name in files.empty_classes(labels, class_names):
        bad_data.log.warning("class folder %s has no images", os.path.join(root, split_dir, name))
    return Source("files", len(class_names), names=names, labels=labels,
                  num_examples=len(names))


def _cifar_source(kind, split, data_dir, input_context):
    from pipelines import cifar, tfds_source

    num_classes = 10 if kind == "cifar10" else 100
    pickles = ("cifar-10-batches-py",) if kind == "cifar10" else ("cifar-100-python",)
    if any(os.path.isdir(os.path.join(data_dir, p)) for p in pickles) or os.path.basename(
        os.path.normpath(data_dir)
    ) in pickles:
        images, labels = cifar.load_cifar_pickle(data_dir, split, num_classes=num_classes)
        return Source("arrays", num_classes, images=images, labels=labels,
                      num_examples=len(labels))
    dataset, count, _ = tfds_source.tfds_dataset(kind, split, data_dir,
                                                 input_context=input_context)
    return Source("tfds", num_classes, dataset=dataset, num_examples=count)


def _imagenet_source(split, data_dir, one_based_labels, input_context):
    tfds_split = "validation" if split in ("val", "validation") else split
    shards = sorted(glob.glob(os.path.join(data_dir, f"{tfds_split}-*")))
    if shards:
        return Source("records", 1000, shards=shards)
    if os.path.isdir(os.path.join(data_dir, "imagenet2012")):
        from pipelines import tfds_source

        dataset, count, _ = tfds_source.tfds_dataset(
            "imagenet2012", tfds_split, data_dir, decode_images=False,
            input_context=input_context)
        return Source("tfds", 1000, dataset=dataset, encoded=True, num_examples=count)
    if _existing_split_dir(data_dir, split):
        return _folder_source(data_dir, split)
    raise ValueError(
        f"no ImageNet {split!r} split in {data_dir!r}: expected TFRecord shards "
        f"{tfds_split}-*, a prepared TFDS imagenet2012/ folder, or {split}/<class>/<image>"
    )


def _check_size(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _label_problem(label, num_classes):
    if num_classes is None:
        return tf.constant("")
    ok = (label >= 0) & (label < num_classes)
    return tf.where(ok, "", tf.strings.format("label {} not in [0, {})", (label, num_classes)))


def _image_fn(form, training, image_size, num_classes, color_jitter, one_based_labels,
              sizes):
    """The per-example function of an encoded-image source: read or parse, decode, crop,
    check the label. Returns ((image or images, label), problem)."""

    @bad_data.graph_only
    def fn(*args):
        if form == "records":
            encoded, label = files.parse_imagenet_record(args[0], one_based_labels)
            rest = args[1:]
        else:
            payload, label = args[0], tf.cast(args[1], tf.int32)
            encoded = tf.io.read_file(payload) if form == "files" else payload
            rest = args[2:]
        if training:
            image = preprocess.imagenet_train(encoded, image_size, rest[0],
                                              color_jitter=color_jitter)
        else:
            image = preprocess.imagenet_eval(encoded, image_size)
        return (_resolutions(image, sizes), label), _label_problem(label, num_classes)

    return fn


def _array_fn(training, image_size, flip, sizes):
    @bad_data.graph_only
    def fn(image, label, *seed):
        if training:
            image = preprocess.cifar_train(image, seed[0], flip=flip)
        else:
            image = preprocess.cifar_eval(image)
        if image.shape[0] != image_size or image.shape[1] != image_size:
            image = preprocess.resize(image, image_size)
        return _resolutions(image, sizes), tf.cast(label, tf.int32)

    return fn


def _resolutions(image, sizes):
    """The image, or MutualNet's tuple of it at each size (bilinear downsizes of one crop)."""
    if not sizes:
        return image
    return tuple(image if s == image.shape[0] else preprocess.resize(image, s) for s in sizes)


def _with_seeds(dataset, seed):
    """Zips a per-element stateless seed (shape [2]), different every epoch, reproducible when
    `seed` is given."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(dataset, seeds).map(bad_data.graph_only(lambda e, s: (*e, s)))


def _shard(dataset, input_context):
    if input_context is None or input_context.num_input_pipelines == 1:
        return dataset
    return dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


def _examples(source, input_context, deterministic):
    """The dataset of example tuples, sharded over input pipelines: TFRecord shards by file when
    there are at least as many files as pipelines, everything else by example (image files are
    examples; TFDS shards its own files)."""
    pipelines = input_context.num_input_pipelines if input_context else 1
    if source.form == "arrays":
        dataset = tf.data.Dataset.from_tensor_slices((source.images, source.labels))
        return _shard(dataset, input_context)
    if source.form == "tfds":
        # TFDS shards its files per worker itself (ReadConfig(input_context=...)).
        dataset = source.dataset
        if source.encoded:
            dataset = dataset.enumerate().map(bad_data.graph_only(
                lambda i, e: (tf.strings.join(["example#", tf.strings.as_string(i)]), *e)))
        return dataset
    if source.form == "files":
        dataset = tf.data.Dataset.from_tensor_slices((source.names, source.names,
                                                      np.asarray(source.labels, np.int32)))
        return _shard(dataset, input_context)
    shards = source.shards
    if pipelines > 1 and len(shards) >= pipelines:
        shards = shards[input_context.input_pipeline_id::pipelines]
        return files.named_records(shards, deterministic=deterministic)
    # Sharding by example needs every pipeline to see the records in the same order.
    ordered = True if pipelines > 1 else deterministic
    return _shard(files.named_records(shards, deterministic=ordered), input_context)


def get_dataset(
    spec,
    split,
    image_size,
    batch_size,
    training,
    data_dir=None,
    on_error="skip",
    *,
    resolutions=None,
    multi_resolution=None,
    seed=None,
    deterministic=False,
    color_jitter=0.0,
    one_based_labels=False,
    num_classes=None,
    shuffle_buffer=None,
    cache=False,
    input_context=None,
    drop_remainder=None,
    data_service=None,
    repeat=False,
    labels="utterance",
    num_frames=None,
    subset=None,
):
    """A batched `tf.data.Dataset` of (images, labels): RGB float32 in [0, 255], int32 labels;
    for speech data sets (log-mel windows float32 [B, 64, frames, 3], int32 labels).

    Args:
        spec: "digits", "cifar10", "cifar100", "imagenet", "folder:PATH", "tfrecord:GLOB",
            "speech:PATH" (WAV folders) or "speech_commands" (prepared TFDS) (the training
            app's `--dataset`). Speech specs go to `pipelines.speech.get_speech_dataset`.
        split: "train", "val"/"validation" or "test".
        image_size: output size (training crops, eval resize + center crop). None for speech
            (its windows are 64 mel bins x `num_frames`).
        batch_size: the global batch; with `input_context` each pipeline gets its per-replica
            share.
        training: random-resized crop / pad-crop, flips and shuffling; else eval preprocessing.
        data_dir: where a prepared copy of cifar10/100 (python pickles or TFDS) or imagenet
            (TFRecord shards, TFDS imagenet2012, or split/<class>/<image>) lives.
        on_error: "skip" (default: bad examples are dropped, counted and named in
            `dataset.bad_data`) or "raise" (the first bad example raises, naming it).
        resolutions: training only: a set of sizes, one drawn per batch (MutualNet / slimmable
            training); crops are made at the largest (= `image_size`), each batch resized.
        multi_resolution: sizes of per-example tuples of the same crop (MutualNet's input list):
            images become a tuple in the given order, crops made at the largest
            (= `image_size`) and resized down.
        seed: makes shuffling and augmentation reproducible (with `deterministic=True`, the
            whole order).
        deterministic: keep element order (parallel maps still run in parallel).
        color_jitter: ImageNet training color jitter strength (0.4 in the official recipe).
        one_based_labels: TFRecord labels are 1..1000 (the usual ImageNet TFRecords).
        num_classes: overrides the number of classes where the data set does not fix it (labels
            outside [0, num_classes) are bad examples).
        shuffle_buffer: examples in the shuffle buffer (default 10,000 images; speech: see
            `pipelines.speech.get_speech_dataset`).
        cache: cache the examples in memory before decoding (file paths for image folders,
            serialized records or encoded images otherwise; arrays for CIFAR/digits).
        input_context: a `tf.distribute.InputContext` (from
            `strategy.distribute_datasets_from_function`): per-worker sharding and batch.
        drop_remainder: default True when training (static batch shapes), False otherwise.
        data_service: address of a `tf.data` service dispatcher ("grpc://host:port") to run
            the preprocessing on its workers (see the README). Bad examples are then skipped
            on the workers, and `bad_data` is None here.
        repeat: repeat the examples indefinitely (reshuffled every pass) before batching: for
            training with a fixed `steps_per_epoch`, so that skipped bad examples never make an
            epoch run out of data.
        labels: speech only: "utterance" (one label per file) or "frame" (alignment files,
            one 49-frame window per frame).
        num_frames: speech only: utterance window length (default 98 frames = 1 s); frame
            labels always use 49-frame windows.
        subset: a `pipelines.Subset(fraction, part)`: only part "a" (the examples not held
            out) or "b" (floor(fraction * n_c) of each class c) of a deterministic, disjoint,
            stratified split of `split`, the same whatever `seed`, `training`, batching or
            `input_context` (see `pipelines.subsets`).

    Returns:
        The dataset, with attributes `bad_data` (a `BadDataReport`: `.count` and `.names` after
        a full pass; `.warn()` logs each by name), `num_classes` and `num_examples` (None where
        unknown).
    """
    bad_data.check_on_error(on_error)
    subsets.check(subset)
    spec = parse_spec(spec)
    if spec.is_speech:
        return _speech_dataset(
            spec, split, image_size, batch_size, training, data_dir, on_error, labels=labels,
            num_frames=num_frames, seed=seed, deterministic=deterministic,
            num_classes=num_classes, input_context=input_context, drop_remainder=drop_remainder,
            repeat=repeat, shuffle_buffer=shuffle_buffer, resolutions=resolutions,
            multi_resolution=multi_resolution, cache=cache, data_service=data_service,
            subset=subset)
    if num_frames is not None or labels != "utterance":
        raise ValueError(f"num_frames and labels apply to speech data sets, not {spec.kind!r}")
    _check_size("image_size", image_size)
    _check_size("batch_size", batch_size)
    sizes = tuple(multi_resolution) if multi_resolution else None
    for name, group in (("multi_resolution", sizes), ("resolutions", resolutions)):
        if group:
            for s in group:
                _check_size(f"{name} size", s)
            if image_size != max(group):
                raise ValueError(f"image_size {image_size} must be the largest of {name}="
                                 f"{tuple(group)}: crops are made at it and resized down")
    if resolutions and sizes:
        raise ValueError("give resolutions (one size per batch) or multi_resolution (tuples of "
                         "sizes), not both")
    if resolutions and not training:
        raise ValueError("resolutions (one drawn per batch) are for training; evaluate at "
                         "one image_size")
    # The digits train/val/test split is fixed (seed 0): `seed` is for shuffling and
    # augmentation, and a training seed must not move test examples into training. A subset is
    # split from the whole split, before any sharding (TFDS: not sharded by file then).
    source = open_source(spec, split, data_dir, image_size=image_size,
                         seed=0, one_based_labels=one_based_labels,
                         input_context=None if subset else input_context)
    classes = num_classes or source.num_classes
    batch = input_context.get_per_replica_batch_size(batch_size) if input_context else batch_size
    source = subsets.select(source, subset)
    if subsets.streamed(source, subset):
        dataset, split_report = subsets.split_stream(source, subset, on_error, repeat, classes)
        dataset = _shard(dataset, input_context)
    else:
        dataset, split_report = _examples(source, input_context, deterministic), None
    if cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(shuffle_buffer or IMAGE_SHUFFLE_BUFFER, seed=seed,
                                  reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    if training:
        dataset = _with_seeds(dataset, seed)
    report = bad_data.BadDataReport(streaming=repeat)
    if source.form == "arrays" or (source.form == "tfds" and not source.encoded):
        dataset = dataset.map(_array_fn(training, image_size, spec.kind != "digits", sizes),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    else:
        form = "encoded" if source.form == "tfds" else source.form
        fn = _image_fn(form, training, image_size, classes, color_jitter, one_based_labels,
                       sizes)
        dataset = bad_data.guarded_map(dataset, fn, on_error, report,
                                       deterministic=deterministic)
    dataset = dataset.batch(batch, drop_remainder=training if drop_remainder is None
                            else drop_remainder)
    if resolutions:
        dataset = _per_batch_resolution(dataset, tuple(resolutions), seed)
    if data_service:
        dataset = dataset.apply(tf.data.experimental.service.distribute(
            processing_mode="parallel_epochs", service=data_service))
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # A per-record split counts the records in their stored order: TFDS's maps must keep it.
    options.deterministic = bool(deterministic) or subsets.streamed(source, subset)
    dataset = dataset.with_options(options)
    # With a data service the preprocessing, and so the skipping, happens on its workers: their
    # logs name what they skip, and this process cannot count it.
    dataset.bad_data = None if data_service else subsets.merge_reports(report, split_report)
    dataset.num_classes = classes
    dataset.num_examples = source.num_examples
    return dataset


def _speech_dataset(spec, split, image_size, batch_size, training, data_dir, on_error, *,
                    labels, num_frames, resolutions, multi_resolution, cache, data_service,
                    **kwargs):
    from pipelines import speech

    if image_size is not None:
        raise ValueError(f"image_size={image_size!r} does not apply to speech data: windows are "
                         f"64 mel bins x num_frames; pass image_size=None (and num_frames)")
    for name, value in (("resolutions", resolutions), ("multi_resolution", multi_resolution),
                        ("cache", cache), ("data_service", data_service)):
        if value:
            raise ValueError(f"{name} is not supported for speech data sets")
    path = spec.kind if spec.kind == "speech_commands" else f"speech:{spec.path}"
    return speech.get_speech_dataset(path, split, batch_size, training, labels=labels,
                                     num_frames=num_frames, on_error=on_error,
                                     data_dir=data_dir, **kwargs)


def _per_batch_resolution(dataset, resolutions, seed):
    """Resizes each batch to one size drawn from `resolutions` (static within a batch, so a
    jit-compiled step compiles once per size)."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    table = tf.constant(resolutions, tf.int32)

    @bad_data.graph_only
    def resize(batch, seed_pair):
        images, labels = batch
        index = tf.random.stateless_uniform([], seed_pair, 0, len(resolutions), tf.int32)
        size = table[index]
        return preprocess.resize(images, size), labels

    return tf.data.Dataset.zip(dataset, seeds).map(resize, num_parallel_calls=tf.data.AUTOTUNE)
