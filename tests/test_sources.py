"""Data sources for the pipelines: sklearn digits, CIFAR pickle folders, prepared TFDS dirs.

Everything here is offline. The TFDS tests use the *real* `cifar10` / `imagenet2012` builder
classes: a tiny data_dir is prepared by serialising examples with the builder's own features
into TFRecord shards and writing its DatasetInfo (`dataset_info.json`, `features.json`), so
reading goes through the genuine TFDS reader (file sharding, split slicing, SkipDecoding).
`tfds.testing.mock_data` is covered too: `USE_FILES` over a metadata-only directory works;
`USE_CODE` points every builder at a non-existing data_dir, so `tfds_dataset` rejects it as
unprepared (by design).
"""

import hashlib
import os
import pickle
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tfds_offline import no_download, prepare_tfds  # noqa: F401 (no_download: autouse below)

from pipelines import tfds_source
from pipelines.cifar import load_cifar_label_names, load_cifar_pickle
from pipelines.digits import NUM_CLASSES, NUM_EXAMPLES, digits_split_indices, load_digits_split
from pipelines.tfds_source import resolve_split, tfds_dataset

SPLITS = ("train", "val", "test")


def _fingerprints(images):
    return [hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images]


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_ranges_and_sizes():
    sizes = {}
    for split in SPLITS:
        images, labels = load_digits_split(split)
        assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
        assert labels.dtype == np.int32 and labels.shape == (len(images),)
        assert images.min() == 0 and images.max() >= 250  # 0..16 scaled to the full 0..255
        assert np.array_equal(images[..., 0], images[..., 1])  # grey replicated to RGB
        assert np.array_equal(images[..., 0], images[..., 2])
        assert labels.min() == 0 and labels.max() == NUM_CLASSES - 1
        sizes[split] = len(images)
    assert sizes["test"] == 360 and sizes["val"] == 180  # 20 % and 10 % of 1,797
    assert sum(sizes.values()) == NUM_EXAMPLES
    val_images, _ = load_digits_split("validation")
    assert np.array_equal(val_images, load_digits_split("val")[0])


def test_digits_splits_are_stratified():
    from sklearn.datasets import load_digits

    full = np.bincount(load_digits().target, minlength=10) / NUM_EXAMPLES
    for split in SPLITS:
        _, labels = load_digits_split(split, image_size=8)
        counts = np.bincount(labels, minlength=10)
        assert (counts > 0).all(), (split, counts)
        assert np.abs(counts / len(labels) - full).max() < 0.01, (split, counts)


def test_digits_splits_partition_the_real_images():
    from sklearn.datasets import load_digits

    digits = load_digits()
    reference = np.clip(np.rint(digits.images * (255 / 16)), 0, 255).astype(np.uint8)
    reference = np.repeat(reference[..., None], 3, axis=-1)  # image_size=8: no resize
    expected = Counter(zip(_fingerprints(reference), digits.target.tolist()))
    assert len(expected) == NUM_EXAMPLES  # the 1,797 images are all distinct

    parts = {}
    for split in SPLITS:
        images, labels = load_digits_split(split, image_size=8)
        parts[split] = Counter(zip(_fingerprints(images), labels.tolist()))
        assert max(parts[split].values()) == 1
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
    assert not (parts["val"] & parts["test"])
    assert parts["train"] + parts["val"] + parts["test"] == expected  # complete, labels kept

    # at the default size too: three disjoint sets of distinct images covering all 1,797
    big = [set(_fingerprints(load_digits_split(s)[0])) for s in SPLITS]
    assert sum(map(len, big)) == len(set.union(*big)) == NUM_EXAMPLES


def test_digits_split_is_deterministic_per_seed():
    a_images, a_labels = load_digits_split("test", seed=3)
    b_images, b_labels = load_digits_split("test", seed=3)
    assert np.array_equal(a_images, b_images) and np.array_equal(a_labels, b_labels)
    other = set(_fingerprints(load_digits_split("test", seed=4)[0]))
    same = set(_fingerprints(a_images))
    assert other != same and len(other & same) < 0.5 * len(same)
    idx = digits_split_indices(seed=3)
    assert np.array_equal(np.sort(np.concatenate(list(idx.values()))), np.arange(NUM_EXAMPLES))


def test_digits_image_size_is_respected():
    small, _ = load_digits_split("val", image_size=8)
    for size in (32, 48):
        images, _ = load_digits_split("val", image_size=size)
        assert images.shape == (len(small), size, size, 3)
        # a bilinear up-sampling keeps each image's mean brightness and its dark border
        diff = np.abs(images.mean(axis=(1, 2, 3)) - small.mean(axis=(1, 2, 3)))
        assert diff.max() < 4.0
        corr = np.corrcoef(images[..., 0].mean(axis=(1, 2)), small[..., 0].mean(axis=(1, 2)))
        assert corr[0, 1] > 0.99
        # bilinear (not nearest) interpolation: many values between the 17 original levels
        levels = set(np.rint(np.arange(17) * (255 / 16)).astype(np.uint8).tolist())
        assert set(np.unique(small).tolist()) <= levels
        assert len(set(np.unique(images).tolist()) - levels) > 100


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "dev"}, "'dev'"),
        ({"split": "train", "image_size": 4}, "4"),
        ({"split": "train", "image_size": "32"}, "'32'"),
        ({"split": "train", "val_fraction": 0.5, "test_fraction": 0.5}, "< 1"),
    ],
)
def test_digits_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_digits_split(**kwargs)


# ----------------------------------------------------------------------------- CIFAR pickle


def _hwc_images(rng, n):
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the real files are Python 2 pickles with bytes keys


def _batch(images, labels, label_key=b"labels", extra=None):
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # row-major CHW rows
    batch = {
        b"batch_label": b"fake batch",
        label_key: [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    batch.update(extra or {})
    return batch


@pytest.fixture()
def fake_cifar10(tmp_path):
    rng = np.random.default_rng(10)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_images, train_labels = [], []
    for i in range(1, 6):
        images, labels = _hwc_images(rng, 2), rng.integers(0, 10, 2)
        _dump(folder / f"data_batch_{i}", _batch(images, labels))
        train_images.append(images)
        train_labels.append(labels)
    test_images, test_labels = _hwc_images(rng, 3), np.array([9, 0, 5])
    _dump(folder / "test_batch", _batch(test_images, test_labels))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    _dump(
        folder / "batches.meta",
        {b"num_cases_per_batch": 2, b"label_names": names, b"num_vis": 3072},
    )
    expected = {
        "train": (np.concatenate(train_images), np.concatenate(train_labels)),
        "test": (test_images, test_labels),
    }
    return tmp_path, folder, expected


def test_cifar10_pickle_hwc_pixel_exact_and_both_path_forms(fake_cifar10):
    parent, folder, expected = fake_cifar10
    for path in (parent, folder, str(folder)):
        for split in ("train", "test"):
            images, labels = load_cifar_pickle(path, split)
            want_images, want_labels = expected[split]
            assert images.dtype == np.uint8 and images.shape == (len(want_images), 32, 32, 3)
            assert labels.dtype == np.int32
            np.testing.assert_array_equal(images, want_images)
            np.testing.assert_array_equal(labels, want_labels)
    # the raw layout itself: row[0] / row[1024] / row[2048] are pixel (0, 0) R, G, B and
    # row[1] is pixel (0, 1) red
    with open(folder / "test_batch", "rb") as f:
        row = pickle.load(f, encoding="bytes")[b"data"][0]
    images, _ = load_cifar_pickle(folder, "test")
    assert list(images[0, 0, 0]) == [row[0], row[1024], row[2048]]
    assert images[0, 0, 1, 0] == row[1] and images[0, 1, 0, 0] == row[32]
    assert load_cifar_label_names(parent)[:3] == ["airplane", "automobile", "bird"]


def test_cifar100_pickle_fine_labels(tmp_path):
    rng = np.random.default_rng(100)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    expected = {}
    for split, n in (("train", 6), ("test", 4)):
        images, fine = _hwc_images(rng, n), rng.integers(0, 100, n)
        fine[0] = 99
        extra = {b"coarse_labels": [int(v) // 5 for v in fine]}
        _dump(folder / split, _batch(images, fine, label_key=b"fine_labels", extra=extra))
        expected[split] = (images, fine)
    _dump(
        folder / "meta",
        {
            b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
        },
    )
    for path in (tmp_path, folder):
        for split in ("train", "test"):
            images, labels = load_cifar_pickle(path, split, num_classes=100)
            np.testing.assert_array_equal(images, expected[split][0])
            np.testing.assert_array_equal(labels, expected[split][1])
            assert labels.dtype == np.int32
    assert load_cifar_label_names(folder, num_classes=100)[99] == "fine99"
    with pytest.raises(FileNotFoundError, match="data_batch_1..5"):
        load_cifar_pickle(folder, "train", num_classes=10)  # CIFAR-10 files are not there


def test_cifar_missing_paths_and_files(tmp_path, fake_cifar10):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_cifar_pickle(missing, "train")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no CIFAR-10 python batches.*empty"):
        load_cifar_pickle(empty, "train")
    _, folder, _ = fake_cifar10
    os.remove(folder / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="missing data_batch_3"):
        load_cifar_pickle(folder, "train")
    assert len(load_cifar_pickle(folder, "test")[0]) == 3  # the test split is still complete


def test_cifar_corrupt_or_hostile_files_name_the_file(fake_cifar10, tmp_path):
    _, folder, _ = fake_cifar10
    bad = folder / "data_batch_2"
    bad.write_bytes(b"\x80\x02this is not a pickle")
    with pytest.raises(ValueError, match="data_batch_2"):
        load_cifar_pickle(folder, "train")

    _dump(bad, {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})  # wrong row size
    with pytest.raises(ValueError, match=r"data_batch_2.*3072"):
        load_cifar_pickle(folder, "train")

    _dump(bad, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})  # label range
    with pytest.raises(ValueError, match=r"data_batch_2.*labels"):
        load_cifar_pickle(folder, "train")

    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    _dump(bad, {b"data": Hostile(), b"labels": [0]})
    with pytest.raises(ValueError, match=r"data_batch_2.*not allowed"):
        load_cifar_pickle(folder, "train")
    assert not marker.exists()


@pytest.mark.parametrize(
    "split, num_classes, match",
    [
        ("val", 10, "no validation split"),
        ("validation", 100, "no validation split"),
        ("dev", 10, "'dev'"),
        ("train", 20, "20"),
    ],
)
def test_cifar_bad_arguments(fake_cifar10, split, num_classes, match):
    with pytest.raises(ValueError, match=match):
        load_cifar_pickle(fake_cifar10[0], split, num_classes=num_classes)


# ----------------------------------------------------------------------------- TFDS


def _gradient(height, width, seed):
    """A smooth image (JPEG keeps it close) that differs per seed."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 40 * seed)], -1)
    return image.astype(np.uint8)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(7)
    cifar = {
        split: [
            {"id": f"{split}_{i}", "image": _hwc_images(rng, 1)[0], "label": (3 * i + 1) % 10}
            for i in range(n)
        ]
        for split, n in (("train", 6), ("test", 4))
    }
    prepare_tfds(
        "cifar10",
        data_dir,
        {"train": [cifar["train"][:4], cifar["train"][4:]], "test": [cifar["test"]]},
    )
    imagenet = {
        split: [
            {
                "file_name": f"{split}_{i}.JPEG",
                "image": _gradient(40 + 8 * i, 56 - 4 * i, i),
                "label": label,
            }
            for i, label in enumerate(labels)
        ]
        for split, labels in (("train", [5, 17, 300]), ("validation", [0, 999]))
    }
    prepare_tfds("imagenet2012", data_dir, {s: [examples] for s, examples in imagenet.items()})
    return data_dir, cifar, imagenet


@pytest.fixture(autouse=True)
def _offline(no_download):  # noqa: F811
    """Every test here fails on any download attempt or network connection."""


def _as_numpy(ds):
    pairs = list(ds.as_numpy_iterator())
    return [p[0] for p in pairs], np.array([p[1] for p in pairs])


def test_tfds_cifar10_prepared_dir(prepared):
    data_dir, cifar, _ = prepared
    ds, n, classes = tfds_dataset("cifar10", "train", data_dir)
    assert (n, classes) == (6, 10)
    assert ds.element_spec[0].dtype == tf.uint8 and ds.element_spec[1].dtype == tf.int32
    images, labels = _as_numpy(ds)
    np.testing.assert_array_equal(np.stack(images), [e["image"] for e in cifar["train"]])
    np.testing.assert_array_equal(labels, [e["label"] for e in cifar["train"]])

    ds, n, _ = tfds_dataset("cifar10", "test", str(data_dir))
    images, labels = _as_numpy(ds)
    assert n == 4 and labels.tolist() == [e["label"] for e in cifar["test"]]
    for alias in ("val", "validation"):  # CIFAR has no validation split: refused, not "test"
        with pytest.raises(ValueError, match=r"hold out a slice"):
            tfds_dataset("cifar10", alias, str(data_dir))

    ds, n, _ = tfds_dataset("cifar10", "train[:50%]", data_dir)
    assert n == 3 and len(_as_numpy(ds)[1]) == 3

    ds, _, _ = tfds_dataset("cifar10", "test", data_dir, decode_images=False)
    assert ds.element_spec[0] == tf.TensorSpec((), tf.string)
    encoded, _ = _as_numpy(ds)
    assert encoded[0][:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(tf.io.decode_png(encoded[0]).numpy(), cifar["test"][0]["image"])


def test_tfds_imagenet2012_encoded_jpeg_and_split_mapping(prepared):
    data_dir, _, imagenet = prepared
    want = imagenet["validation"]
    for alias in ("val", "validation"):
        ds, n, classes = tfds_dataset("imagenet2012", alias, data_dir, decode_images=False)
        assert (n, classes) == (2, 1000)
        assert ds.element_spec == (tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int32))
        encoded, labels = _as_numpy(ds)
        assert labels.tolist() == [0, 999]
        assert all(e[:2] == b"\xff\xd8" for e in encoded)  # JPEG start-of-image marker

    decoded_ds, _, _ = tfds_dataset("imagenet2012", "validation", data_dir)
    decoded, _ = _as_numpy(decoded_ds)
    for raw, image, example in zip(encoded, decoded, want):
        from_bytes = tf.io.decode_jpeg(raw, channels=3).numpy()
        np.testing.assert_array_equal(from_bytes, image)  # same bytes the decoder gets
        assert image.shape == example["image"].shape and image.dtype == np.uint8
        assert np.abs(image.astype(int) - example["image"]).mean() < 3  # JPEG is lossy

    ds, n, _ = tfds_dataset("imagenet2012", "train", data_dir, shuffle_files=True)
    assert n == 3 and sorted(_as_numpy(ds)[1].tolist()) == [5, 17, 300]


def test_tfds_unknown_split_lists_available(prepared):
    data_dir = prepared[0]
    with pytest.raises(ValueError, match=r"'test'.*\['train', 'validation'\]"):
        tfds_dataset("imagenet2012", "test", data_dir)
    with pytest.raises(ValueError, match=r"\['test', 'train'\]"):
        tfds_dataset("cifar10", "holdout", data_dir)
    assert resolve_split("val[:10]", ["train", "validation"]) == "validation[:10]"


def test_tfds_input_context_shards_files_per_worker(prepared):
    data_dir, cifar, _ = prepared
    seen = []
    user_config = tfds.ReadConfig(interleave_cycle_length=1)
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker)
        ds, n, _ = tfds_dataset(
            "cifar10", "train", data_dir, read_config=user_config, input_context=context
        )
        assert n == 6  # the whole split; each worker reads its own files
        seen.append(_as_numpy(ds)[1].tolist())
    assert user_config.input_context is None  # the caller's ReadConfig is not modified
    labels = [e["label"] for e in cifar["train"]]
    assert seen == [labels[:4], labels[4:]]  # shard 0 (4 examples) and shard 1 (2 examples)


def test_tfds_missing_data_dir_fails_before_building(tmp_path, monkeypatch):
    def no_builder(*args, **kwargs):
        raise AssertionError("tfds.builder must not be reached for a missing data_dir")

    monkeypatch.setattr(tfds, "builder", no_builder)
    missing = tmp_path / "no_such_dir"
    with pytest.raises(ValueError, match=r"'imagenet2012'.*no_such_dir.*never downloads"):
        tfds_dataset("imagenet2012", "validation", missing)
    assert not missing.exists()
    with pytest.raises(ValueError, match="data_dir"):
        tfds_dataset("cifar10", "train", None)


@pytest.mark.parametrize("name", ["cifar10", "imagenet2012", "cifar100"])
def test_tfds_unprepared_data_dir_never_downloads(tmp_path, name):
    (tmp_path / "unrelated.txt").write_text("x")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match=rf"'{name}'.*{tmp_path.name}.*tfds build {name}"):
        tfds_dataset(name, "train", tmp_path)  # download_and_prepare would raise AssertionError
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_tfds_mock_data_use_files_with_local_metadata(tmp_path):
    """mock_data(USE_FILES) works offline once the builder's metadata files are local."""
    builder = tfds.builder("imagenet2012", data_dir=tmp_path)
    builder.data_path.mkdir(parents=True)
    builder.info.set_splits(
        tfds.core.SplitDict(
            [
                tfds.core.SplitInfo(name="train", shard_lengths=[1281167], num_bytes=0),
                tfds.core.SplitInfo(name="validation", shard_lengths=[50000], num_bytes=0),
            ]
        )
    )
    builder.info.write_to_directory(builder.data_path)  # metadata only, no records
    policy = tfds.testing.MockPolicy.USE_FILES
    with tfds.testing.mock_data(num_examples=3, policy=policy, data_dir=os.fspath(tmp_path)):
        ds, n, classes = tfds_dataset("imagenet2012", "val", tmp_path, decode_images=False)
        assert (n, classes) == (50000, 1000)  # counts come from the metadata
        encoded, labels = _as_numpy(ds)  # the examples are random, 3 of them
        assert len(encoded) == 3 and labels.dtype == np.int32
        assert all(tf.io.decode_jpeg(e).shape[-1] == 3 for e in encoded)


def test_tfds_mock_data_use_code_counts_as_unprepared(tmp_path):
    """mock_data(USE_CODE) redirects every builder to a non-existing data_dir with no splits,
    so tfds_dataset reports the data set as unprepared rather than reading mock data."""
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(ValueError, match="not prepared"):
            tfds_dataset("cifar10", "train", tmp_path)


def test_sources_do_not_import_bl_keras():
    import pathlib

    root = pathlib.Path(tfds_source.__file__).parent
    for module in ("digits.py", "cifar.py", "tfds_source.py"):
        text = (root / module).read_text()
        assert "import bl_keras" not in text and "from bl_keras" not in text, module


# ------------------------------------------------------------- through pipelines.get_dataset


def test_get_dataset_reads_cifar_pickles(fake_cifar10):
    import pipelines

    parent, _, expected = fake_cifar10
    ds = pipelines.get_dataset("cifar10", "test", 32, 2, training=False, data_dir=str(parent))
    images = np.concatenate([x.numpy() for x, _ in ds])
    np.testing.assert_array_equal(images, expected["test"][0].astype(np.float32))
    train = pipelines.get_dataset("cifar10", "train", 32, 4, training=True,
                                  data_dir=str(parent), seed=0)
    assert [x.shape for x, _ in train] == [(4, 32, 32, 3)] * 2  # 10 examples, remainder dropped


def test_get_dataset_reads_prepared_tfds(prepared):
    import pipelines

    data_dir, cifar, imagenet = prepared
    ds = pipelines.get_dataset("cifar10", "train", 32, 3, training=False, data_dir=str(data_dir))
    assert sum(len(y) for _, y in ds) == len(cifar["train"]) and ds.num_classes == 10
    ds = pipelines.get_dataset("imagenet", "val", 24, 2, training=True, data_dir=str(data_dir),
                               drop_remainder=False, seed=0)
    batches = list(ds)
    assert batches[0][0].shape == (2, 24, 24, 3)
    assert sorted(np.concatenate([y.numpy() for _, y in batches]).tolist()) == [0, 999]
    assert ds.bad_data.count == 0
