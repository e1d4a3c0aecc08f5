"""Prepared TensorFlow Datasets (TFDS) data sets read from a local `data_dir`, never downloaded.

The data set must already be prepared in `data_dir` (``data_dir/<name>/<version>/`` with
``dataset_info.json``, ``features.json`` and the record shards), e.g. by running
``tfds build <name> --data_dir <data_dir>`` on a machine that has the source files (ImageNet
needs its tar files in the manual dir) and copying the prepared directory here. This module
never calls `download_and_prepare`, and with tensorflow-datasets 4.9 building a builder for an
unprepared directory does not touch the network either (TFDS's GCS access is disabled by
default), so an unprepared data set is reported with a ValueError instead of a download.
"""

import dataclasses
import os

import tensorflow as tf

_VALIDATION_ALIASES = ("val", "validation")


def tfds_dataset(
    name,
    split,
    data_dir,
    decode_images=True,
    shuffle_files=False,
    read_config=None,
    input_context=None,
):
    """Read a prepared TFDS image-classification data set as `(image, label)` pairs.

    Args:
        name: TFDS name, e.g. "cifar10", "cifar100", "imagenet2012" (optionally "name:version").
        split: a split of the data set, optionally with TFDS slicing ("train[:10%]").
            "val"/"validation" map to "validation" when the data set has one (imagenet2012);
            without one (cifar10/100) "val" is refused (see `resolve_split`), never silently
            the test set.
        data_dir: the TFDS data directory holding the prepared data set (required; nothing is
            downloaded or prepared here).
        decode_images: True -> images as decoded uint8 [H, W, 3]. False -> the encoded image
            bytes as a scalar tf.string (JPEG for imagenet2012, PNG for cifar), via
            `tfds.decode.SkipDecoding()`, for a fused decode-and-crop in the pipeline.
        shuffle_files: shuffle the order of the record files (passed to `as_dataset`).
        read_config: optional `tfds.ReadConfig`; not modified (a copy is used when
            `input_context` is also given).
        input_context: optional `tf.distribute.InputContext` (e.g. from
            `strategy.distribute_datasets_from_function`); sets `ReadConfig.input_context` so
            TFDS reads only this worker's share of the record files (it needs at least as many
            files as input pipelines).

    Returns:
        `(dataset, num_examples, num_classes)`: a `tf.data.Dataset` of `(image, label)` with
        int32 labels; the number of examples in the whole (sliced) split, i.e. before any
        per-worker sharding by `input_context`; the number of classes of the "label" feature.

    Raises:
        ValueError: `data_dir` missing or the data set not prepared there (raised before
            anything is read), an unknown split (message lists the available splits), or a
            data set without "image"/"label" features.
    """
    import tensorflow_datasets as tfds

    builder = prepared_builder(name, data_dir)
    features = _check_features(builder, name, ("image", "label"))
    resolved = resolve_split(split, list(builder.info.splits.keys()), name=name)

    decoders = None
    if not decode_images:
        if not isinstance(features["image"], tfds.features.Image):
            raise ValueError(
                f"decode_images=False needs an Image feature, but {name!r} 'image' is "
                f"{type(features['image']).__name__}"
            )
        decoders = {"image": tfds.decode.SkipDecoding()}

    ds = builder.as_dataset(
        split=resolved,
        shuffle_files=shuffle_files,
        decoders=decoders,
        read_config=_read_config(read_config, input_context),
    )
    ds = ds.map(
        lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    num_examples = builder.info.splits[resolved].num_examples
    num_classes = features["label"].num_classes
    return ds, num_examples, num_classes


def tfds_audio_dataset(name, split, data_dir, shuffle_files=False, input_context=None):
    """Read a prepared TFDS audio-classification data set (e.g. "speech_commands") as
    `(name, audio, label)`: `name` TFDS's stable id of the example (record file and index, e.g.
    "speech_commands-train.tfrecord-00000-of-00004__17"), `audio` the 1-D integer waveform as
    stored (int16 for speech_commands), `label` int32.

    Same `split`, `data_dir` and `input_context` rules as `tfds_dataset`. Returns
    `(dataset, num_examples, class_names, sample_rate)`; `sample_rate` is the Audio feature's
    (None when the data set does not record it).

    Raises:
        ValueError: not prepared, an unknown split, no "audio"/"label" features, or an audio
            feature that is not a 1-D (mono) waveform.
    """
    builder = prepared_builder(name, data_dir)
    features = _check_features(builder, name, ("audio", "label"))
    audio = features["audio"]
    if len(audio.shape) != 1:
        raise ValueError(f"TFDS data set {name!r}: 'audio' has shape {audio.shape}; a mono "
                         "waveform [samples] is expected")
    resolved = resolve_split(split, list(builder.info.splits.keys()), name=name)
    import tensorflow_datasets as tfds

    read_config = _read_config(tfds.ReadConfig(add_tfds_id=True), input_context)
    ds = builder.as_dataset(split=resolved, shuffle_files=shuffle_files, read_config=read_config)
    ds = ds.map(lambda ex: (ex["tfds_id"], ex["audio"], tf.cast(ex["label"], tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE)
    num_examples = builder.info.splits[resolved].num_examples
    return ds, num_examples, list(features["label"].names), getattr(audio, "sample_rate", None)


def prepared_builder(name, data_dir):
    """The TFDS builder of `name` prepared in `data_dir`; ValueError (never a download) if the
    directory or the prepared data set is missing."""
    if data_dir is None or not str(data_dir):
        raise ValueError(
            f"TFDS data set {name!r} needs an explicit data_dir holding the prepared data set; "
            "nothing is ever downloaded"
        )
    data_dir = os.fspath(data_dir)
    if not tf.io.gfile.isdir(data_dir):
        raise ValueError(_not_prepared_message(name, data_dir, "the directory does not exist"))

    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise ValueError(
            _not_prepared_message(name, data_dir, f"nothing prepared at {builder.data_path}")
        )
    return builder


def _check_features(builder, name, keys):
    features = builder.info.features
    for key in keys:
        if key not in features:
            raise ValueError(
                f"TFDS data set {name!r} has no {key!r} feature (features: {sorted(features)})"
            )
    return features


def _read_config(read_config, input_context):
    """`read_config` with `input_context` set (a copy; the caller's is not modified)."""
    if input_context is None:
        return read_config
    import tensorflow_datasets as tfds

    if read_config is None:
        return tfds.ReadConfig(input_context=input_context)
    if read_config.input_context not in (None, input_context):
        raise ValueError("read_config.input_context and input_context are both set")
    return dataclasses.replace(read_config, input_context=input_context)


def resolve_split(split, available, name="the data set"):
    """Map a requested split name to one of `available` (the data set's split names).

    Exact names pass through; "val" becomes "validation". A data set without a validation
    split (CIFAR) refuses "val" rather than silently giving its test set. A TFDS slice suffix
    ("train[:10%]") is kept. Raises ValueError listing the available splits for anything else.
    """
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string, got {split!r}")
    base, bracket, rest = split.partition("[")
    base = base.strip()
    if base in available:
        target = base
    elif base in _VALIDATION_ALIASES and "validation" in available:
        target = "validation"
    else:
        raise ValueError(
            f"unknown split {split!r} for {name}; available splits: {sorted(available)} "
            "('val' means 'validation'; without one, hold out a slice such as 'train[90%:]')"
        )
    return target + bracket + rest


def _not_prepared_message(name, data_dir, reason):
    return (
        f"TFDS data set {name!r} is not prepared in data_dir {data_dir!r} ({reason}). "
        "This loader never downloads: prepare it offline, e.g. run "
        f"`tfds build {name} --data_dir <dir>` where the source files are available "
        "(imagenet2012 needs its tar files in the manual dir), then copy the prepared "
        f"<dir>/{name.split(':')[0]}/<version>/ directory into {data_dir!r}."
    )
