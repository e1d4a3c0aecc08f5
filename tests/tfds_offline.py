"""Offline TFDS copies for tests: prepare a data set with the real builder's features from
examples the test makes, and forbid any download or network connection."""

import os
import socket

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds


def prepare_tfds(name, data_dir, splits):
    """Prepare `name` in `data_dir` with the real builder: {split: [shard examples, ...]}."""
    builder = tfds.builder(name, data_dir=data_dir)
    builder.data_path.mkdir(parents=True, exist_ok=True)
    infos = []
    for split, shards in splits.items():
        template = tfds.core.ShardedFileTemplate(
            data_dir=builder.data_path,
            template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
            dataset_name=builder.name,
            split=split,
            filetype_suffix="tfrecord",
        )
        for path, examples in zip(template.sharded_filepaths(len(shards)), shards):
            with tf.io.TFRecordWriter(os.fspath(path)) as writer:
                for example in examples:
                    writer.write(builder.info.features.serialize_example(example))
        lengths = [len(examples) for examples in shards]
        infos.append(
            tfds.core.SplitInfo(
                name=split, shard_lengths=lengths, num_bytes=0, filename_template=template
            )
        )
    builder.info.set_splits(tfds.core.SplitDict(infos))
    builder.info.write_to_directory(builder.data_path)


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to prepare/download or to open a network connection fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError("tried to download / prepare / connect")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
