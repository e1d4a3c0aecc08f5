"""get_dataset end to end: sources, bad data, sharding, resolutions, determinism."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import pipelines
from pipelines import files

# Class k's images are a flat grey of level CLASS_LEVELS[k], so a label can be checked from the
# pixels after any crop and resize.
CLASS_LEVELS = (40, 200)


def encode(image, fmt, **kwargs):
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def flat(level, mode="RGB", size=(60, 45)):
    if mode == "CMYK":
        return Image.new("RGB", size, (level,) * 3).convert("CMYK")
    if mode in ("L", "P"):
        return Image.new("L", size, level).convert(mode)
    if mode == "RGBA":
        return Image.new("RGBA", size, (level, level, level, 128))
    return Image.new("RGB", size, (level,) * 3)


def good_files(level):
    """Every decodable kind, all named .jpg (where JPEGs are expected), plus real extensions."""
    return {
        "rgb.jpg": encode(flat(level), "JPEG", quality=95),
        "gray.jpg": encode(flat(level, "L"), "JPEG", quality=95),
        "cmyk.jpg": encode(flat(level, "CMYK"), "JPEG", quality=95),
        "png.jpg": encode(flat(level), "PNG"),
        "rgba_png.jpg": encode(flat(level, "RGBA"), "PNG"),
        "gif.jpg": encode(flat(level, "P"), "GIF"),
        "bmp.jpg": encode(flat(level), "BMP"),
        "real.png": encode(flat(level), "PNG"),
        "real.gif": encode(flat(level, "P"), "GIF"),
        "real.bmp": encode(flat(level), "BMP"),
    }


def bad_files(level):
    jpeg = encode(flat(level), "JPEG", quality=95)
    return {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "empty.jpg": b"",
        "text.jpg": b"this is not an image\n" * 20,
    }


@pytest.fixture(scope="module")
def dirty_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("dirty")
    for label, level in enumerate(CLASS_LEVELS):
        folder = root / "train" / f"class{label}"
        folder.mkdir(parents=True)
        for name, data in {**good_files(level), **bad_files(level)}.items():
            (folder / name).write_bytes(data)
        (folder / "notes.txt").write_text("not listed: not an image extension")
    (root / "train" / "class2_empty").mkdir()
    return root


def check_labels(images, labels):
    """Every image's pixels say which class it came from (no example has a wrong label)."""
    levels = np.asarray(CLASS_LEVELS, np.float32)[labels]
    means = images.reshape(len(images), -1).mean(axis=1)
    np.testing.assert_allclose(means, levels, atol=6)


def collect(dataset):
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def test_list_image_folder_keeps_empty_class_indices(dirty_folder):
    paths, labels, classes = files.list_image_folder(str(dirty_folder), "train")
    assert classes == ["class0", "class1", "class2_empty"]
    assert len(paths) == 2 * 13 and set(labels) == {0, 1}
    assert not any(p.endswith(".txt") for p in paths)
    assert files.empty_classes(labels, classes) == ["class2_empty"]


@pytest.mark.parametrize("training", [False, True])
def test_dirty_folder_skips_and_counts_every_bad_file(dirty_folder, training, caplog):
    ds = pipelines.get_dataset(f"folder:{dirty_folder}", "train", image_size=32, batch_size=4,
                               training=training, drop_remainder=False, seed=1)
    images, labels = collect(ds)
    assert len(images) == 2 * len(good_files(0))  # every decodable image is used
    assert images.shape[1:] == (32, 32, 3) and images.dtype == np.float32
    check_labels(images, labels)
    assert ds.bad_data.count == 2 * len(bad_files(0))
    expected = sorted(str(dirty_folder / "train" / f"class{k}" / name)
                      for k in range(2) for name in bad_files(0))
    assert ds.bad_data.names == expected
    with caplog.at_level("WARNING", logger="pipelines"):
        assert ds.bad_data.warn() == 6
    assert all(name in caplog.text for name in expected)
    # A second epoch finds the same bad files, not more.
    collect(ds)
    assert ds.bad_data.count == 6


def test_dirty_folder_raise_names_the_first_bad_file(dirty_folder):
    ds = pipelines.get_dataset(f"folder:{dirty_folder}", "train", image_size=32, batch_size=4,
                               training=False, on_error="raise", deterministic=True)
    with pytest.raises(Exception, match=r"bad example .*class0.*empty\.jpg"):
        collect(ds)


def write_imagenet_records(path, examples):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for item in examples:
            if isinstance(item, bytes):
                writer.write(item)
                continue
            encoded, label = item
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())


@pytest.fixture(scope="module")
def dirty_records(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    jpeg = [encode(flat(level), "JPEG", quality=95) for level in CLASS_LEVELS]
    # 1-based labels, as the usual ImageNet TFRecords; num_classes=2 below.
    write_imagenet_records(root / "train-00000-of-00002", [
        (jpeg[0], 1), (jpeg[1], 2), b"\x00garbage, not a tf.train.Example", (jpeg[0], 1)])
    write_imagenet_records(root / "train-00001-of-00002", [
        (jpeg[1], 2), (jpeg[0], 7), (b"not a jpeg", 1), (jpeg[1], 2)])
    return root


def test_dirty_records_skip_and_count(dirty_records):
    ds = pipelines.get_dataset(f"tfrecord:{dirty_records}/train-*", "train", image_size=32,
                               batch_size=2, training=True, one_based_labels=True,
                               num_classes=2, drop_remainder=False, seed=0)
    images, labels = collect(ds)
    assert len(images) == 5
    check_labels(images, labels)
    assert ds.bad_data.names == sorted([
        f"{dirty_records}/train-00000-of-00002#2",
        f"{dirty_records}/train-00001-of-00002#1",
        f"{dirty_records}/train-00001-of-00002#2",
    ])


def test_out_of_range_label_raises_naming_the_record(dirty_records):
    ds = pipelines.get_dataset(f"tfrecord:{dirty_records}/train-00001-*", "train",
                               image_size=32, batch_size=2, training=False,
                               one_based_labels=True, num_classes=2, on_error="raise",
                               deterministic=True)
    with pytest.raises(Exception, match=r"train-00001-of-00002#1: label 6 not in \[0, 2\)"):
        collect(ds)


@pytest.mark.parametrize(
    "spec,kwargs,match",
    [
        ("folder:/nonexistent/images", {}, "no image folder at '/nonexistent/images/train'"),
        ("tfrecord:/nonexistent/train-*", {}, "no TFRecord files matching 'train-\\*'"),
        ("imagenet", {}, "needs data_dir"),
        ("imagenet", {"data_dir": "/nonexistent"}, "'/nonexistent' does not exist"),
        ("mnist", {}, "unknown data set 'mnist'"),
        ("digits", {"on_error": "ignore"}, "on_error must be one of"),
    ],
)
def test_missing_sources_fail_before_training(spec, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipelines.get_dataset(spec, "train", image_size=32, batch_size=2, training=True,
                              **kwargs)


def test_imagenet_spec_finds_each_layout(dirty_records, dirty_folder, tmp_path):
    ds = pipelines.get_dataset("imagenet", "train", 32, 2, training=False,
                               data_dir=str(dirty_records), num_classes=1000)
    assert sum(len(y) for _, y in ds) == 6  # the garbage record and bad JPEG are skipped
    ds = pipelines.get_dataset("imagenet", "train", 32, 2, training=False,
                               data_dir=str(dirty_folder))
    assert ds.num_classes == 3
    with pytest.raises(ValueError, match="expected TFRecord shards validation-"):
        pipelines.get_dataset("imagenet", "val", 32, 2, training=False, data_dir=str(tmp_path))


def test_digits_batches():
    ds = pipelines.get_dataset("digits", "train", image_size=32, batch_size=64, training=True,
                               seed=0)
    images, labels = next(iter(ds))
    assert images.shape == (64, 32, 32, 3) and labels.dtype == tf.int32
    assert 0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255
    assert ds.num_classes == 10 and ds.num_examples > 1000


def test_deterministic_mode_repeats_exactly():
    def first_two(seed):
        ds = pipelines.get_dataset("digits", "train", 32, 16, training=True, seed=seed,
                                   deterministic=True)
        return [x.numpy() for x, _ in ds.take(2)]

    a, b, c = first_two(3), first_two(3), first_two(4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_epochs_differ():
    ds = pipelines.get_dataset("digits", "train", 32, 16, training=True, seed=3,
                               deterministic=True)
    first = [x.numpy() for x, _ in ds.take(1)][0]
    second = [x.numpy() for x, _ in ds.take(1)][0]
    assert not np.array_equal(first, second)


def test_per_batch_resolution():
    ds = pipelines.get_dataset("digits", "train", 32, 8, training=True, seed=0,
                               resolutions=(32, 24, 16))
    sizes = {x.shape[1] for x, _ in ds.take(30)}
    assert sizes == {32, 24, 16}
    for x, _ in ds.take(5):
        assert x.shape[1] == x.shape[2]


def test_multi_resolution_tuples_are_the_same_crop():
    ds = pipelines.get_dataset("digits", "train", 32, 4, training=True, seed=0,
                               multi_resolution=(32, 16))
    (big, small), labels = next(iter(ds))
    assert big.shape == (4, 32, 32, 3) and small.shape == (4, 16, 16, 3)
    np.testing.assert_allclose(small.numpy(), tf.image.resize(big, (16, 16)).numpy(), atol=1e-3)


def test_resolution_sets_must_include_image_size():
    with pytest.raises(ValueError, match="image_size 32 must be the largest of"):
        pipelines.get_dataset("digits", "train", 32, 8, training=True, resolutions=(48, 32))
    with pytest.raises(ValueError, match="image_size 24 must be the largest of"):
        pipelines.get_dataset("digits", "train", 24, 8, training=True,
                              multi_resolution=(32, 24))


def test_resolutions_only_when_training():
    with pytest.raises(ValueError, match="for training"):
        pipelines.get_dataset("digits", "test", 32, 8, training=False, resolutions=(32, 16))


def test_sharding_by_file_and_per_replica_batch(dirty_records, dirty_folder):
    seen = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker,
                                             num_replicas_in_sync=2)
        ds = pipelines.get_dataset(f"tfrecord:{dirty_records}/train-*", "train", 32,
                                   batch_size=4, training=False, one_based_labels=True,
                                   num_classes=2, input_context=context)
        batches = list(ds)
        assert max(len(y) for _, y in batches) <= 2  # global batch 4 over 2 replicas
        seen.append(sum(len(y) for _, y in batches))
    assert sum(seen) == 5 and all(seen)  # each worker read one shard

    counts = []
    for worker in range(3):  # more pipelines than... still fine: the image list is sharded
        context = tf.distribute.InputContext(3, worker, 3)
        ds = pipelines.get_dataset(f"folder:{dirty_folder}", "train", 32, 3, training=False,
                                   input_context=context)
        counts.append(sum(len(y) for _, y in ds))
    assert sum(counts) == 2 * len(good_files(0))


def test_data_sharding_when_there_are_fewer_shards_than_workers(dirty_records):
    counts = []
    for worker in range(3):
        context = tf.distribute.InputContext(3, worker, 3)
        ds = pipelines.get_dataset(f"tfrecord:{dirty_records}/train-*", "train", 32, 3,
                                   training=False, one_based_labels=True, num_classes=2,
                                   input_context=context)
        counts.append(sum(len(y) for _, y in ds))
    assert sum(counts) == 5 and all(counts)  # records dealt round-robin, none twice


def test_data_sharding_of_arrays():
    total = 0
    for worker in range(2):
        context = tf.distribute.InputContext(2, worker, 2)
        ds = pipelines.get_dataset("digits", "test", 32, 8, training=False,
                                   input_context=context)
        total += sum(len(y) for _, y in ds)
    full = pipelines.get_dataset("digits", "test", 32, 8, training=False)
    assert total == sum(len(y) for _, y in full) == full.num_examples


def test_cache_and_eval_any_resolution():
    ds = pipelines.get_dataset("digits", "test", 48, 32, training=False, cache=True)
    images, _ = next(iter(ds))
    assert images.shape[1:] == (48, 48, 3)


def test_data_service(tmp_path):
    dispatcher = tf.data.experimental.service.DispatchServer()
    address = dispatcher.target.split("://")[1]
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(dispatcher_address=address))
    ds = pipelines.get_dataset("digits", "test", 32, 32, training=False,
                               data_service=dispatcher.target)
    assert sum(len(y) for _, y in ds) == ds.num_examples
    assert ds.bad_data is None  # counted on the service's workers, not here
    del worker


def test_no_data_set_is_downloaded(monkeypatch):
    import tensorflow_datasets as tfds

    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)
    with pytest.raises(ValueError, match="prepared"):
        pipelines.get_dataset("cifar10", "train", 32, 8, training=True,
                              data_dir=os.fspath(os.getcwd()))
