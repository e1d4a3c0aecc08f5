"""`pipelines.Subset`: deterministic, disjoint, stratified D_a / D_b splits of any data set."""

import hashlib
import io
import os
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import tensorflow as tf
from audio import RATE, chirp, write
from PIL import Image
from tfds_offline import no_download, prepare_tfds  # noqa: F401 (fixture)

import pipelines
from pipelines import files, speech, subsets
from pipelines.digits import load_digits_split

A, B = pipelines.Subset(0.2, "a"), pipelines.Subset(0.2, "b")


def fingerprints(dataset):
    """Multiset of (image bytes as uint8, label) of a dataset of batches."""
    out = Counter()
    for x, y in dataset:
        for image, label in zip(np.rint(x.numpy()).astype(np.uint8), y.numpy()):
            out[(hashlib.sha1(image.tobytes()).hexdigest(), int(label))] += 1
    return out


def labels_of(dataset):
    return Counter(int(v) for _, y in dataset for v in y.numpy())


def digits(subset=None, **kwargs):
    kwargs = {"training": False, "batch_size": 100, **kwargs}
    return pipelines.get_dataset("digits", "train", 8, subset=subset, **kwargs)


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("args, match", [
    ((0, "a"), "got 0"), ((1.0, "b"), "got 1.0"), ((-0.2, "a"), "got -0.2"),
    (("0.2", "a"), "got '0.2'"), ((True, "a"), "got True"), ((1e-9, "a"), "too close"),
    ((0.2, "c"), "got 'c'"), ((0.2, "A"), "got 'A'"), ((0.2, None), "got None"),
])
def test_subset_validation(args, match):
    with pytest.raises(ValueError, match=match):
        pipelines.Subset(*args)


def test_subset_argument_must_be_a_subset():
    with pytest.raises(ValueError, match="got 0.2"):
        digits(subset=0.2)
    with pytest.raises(ValueError, match=r"got \('a', 0.2\)"):
        speech.get_speech_dataset("speech:/nonexistent", "train", 4, False, subset=("a", 0.2))


def test_held_out_count_is_exact_floor():
    assert pipelines.Subset(0.29, "b").held_out_count(100) == 29  # float 0.29 * 100 < 29
    assert pipelines.Subset(0.2, "b").held_out_count(5000) == 1000
    assert [B.held_out_count(n) for n in (4, 5, 9, 10, 124)] == [0, 1, 1, 2, 24]


# ---------------------------------------------------------------------------------- digits


def test_digits_sizes_disjoint_complete_and_stratified():
    images, labels = load_digits_split("train", image_size=8)
    full = fingerprints(digits())
    assert sum(full.values()) == len(labels) == 1257 and max(full.values()) == 1
    a, b = digits(A), digits(B)
    per_class = np.bincount(labels, minlength=10)
    held = per_class * 2 // 10  # floor(0.2 * n_c)
    assert a.num_examples == 1257 - held.sum() == 1010 and b.num_examples == held.sum() == 247
    fa, fb = fingerprints(a), fingerprints(b)
    assert not set(fa) & set(fb) and fa + fb == full  # disjoint, complete, labels kept
    assert labels_of(b) == {c: int(h) for c, h in enumerate(held)}
    assert labels_of(a) == {c: int(n - h) for c, (n, h) in enumerate(zip(per_class, held))}
    assert sum(fb.values()) == b.num_examples


def test_digits_deterministic_across_seeds_training_batches_and_shards():
    fb = fingerprints(digits(B))
    assert fingerprints(digits(B, seed=5, batch_size=7)) == fb
    assert fingerprints(digits(B, seed=9, deterministic=True)) == fb
    shards = Counter()
    for worker in range(2):
        context = tf.distribute.InputContext(2, worker, 2)
        shards += fingerprints(digits(B, input_context=context))
    assert shards == fb
    counts = labels_of(digits(B))
    for seed in (1, 2):  # training: augmented images, the same examples
        train = digits(B, training=True, seed=seed, drop_remainder=False, batch_size=32)
        assert train.num_examples == sum(counts.values()) and labels_of(train) == counts


def test_digits_repeat_and_batch():
    b = digits(B)
    fb, n = fingerprints(b), b.num_examples
    endless = digits(B, repeat=True, batch_size=19)  # 247 = 13 * 19: two passes in 26
    assert fingerprints(endless.take(26)) == fb + fb
    train = digits(B, training=True, repeat=True, batch_size=64, seed=0)
    shapes = [x.shape for x, _ in train.take(2 * n // 64 + 1)]  # past the end of one pass
    assert all(s == (64, 8, 8, 3) for s in shapes)


# ------------------------------------------------------------------------- image folders


def png(level, size=(12, 10)):
    buf = io.BytesIO()
    Image.new("RGB", size, (level,) * 3).save(buf, format="PNG")
    return buf.getvalue()


def levels(dataset):
    """Counter of the (flat) grey level of every image."""
    return Counter(int(round(float(im.mean()))) for x, _ in dataset for im in x.numpy())


def level_of(cls, i):
    return 4 + 8 * (10 * cls + i)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 classes of 10 flat PNGs (grey level = identity) plus a truncated file in class 1."""
    root = tmp_path_factory.mktemp("subset_folder")
    for cls in range(3):
        d = root / "train" / f"c{cls}"
        d.mkdir(parents=True)
        for i in range(10):
            (d / f"{i}.png").write_bytes(png(level_of(cls, i)))
    (root / "train" / "c1" / "5b_corrupt.png").write_bytes(png(99)[:20])
    return root


def test_folder_partition_with_a_corrupt_file(folder):
    fraction = 0.3
    spec = f"folder:{folder}"
    names, labels, _ = files.list_image_folder(str(folder), "train")
    held = subsets.held_out_mask(labels, pipelines.Subset(fraction, "b"))
    expected = {"a": Counter(), "b": Counter()}
    for name, is_held in zip(names, held):
        if "corrupt" not in name:
            cls, i = int(os.path.basename(os.path.dirname(name))[1]), int(os.path.basename(name)[0])
            expected["b" if is_held else "a"][level_of(cls, i)] += 1
    corrupt_part = "b" if held[[("corrupt" in n) for n in names].index(True)] else "a"
    per_class = {"a": [], "b": []}
    for part in "ab":
        ds = pipelines.get_dataset(spec, "train", 8, 4, training=False, drop_remainder=False,
                                   subset=pipelines.Subset(fraction, part))
        assert levels(ds) == expected[part]
        assert ds.num_examples == int((held if part == "b" else ~held).sum())
        assert ds.bad_data.count == (part == corrupt_part)
        per_class[part] = Counter(labels_of(ds))
    assert expected["a"] + expected["b"] == Counter(level_of(c, i) for c in range(3)
                                                    for i in range(10))
    # floor(fraction * n_c) of each class held out (class 1 lists 11 files)
    listed = [10, 11, 10]
    assert [sum(held[np.asarray(labels) == c]) for c in range(3)] == [
        int(Fraction(str(fraction)) * n) for n in listed]
    train = pipelines.get_dataset(spec, "train", 8, 4, training=True, seed=3,
                                  drop_remainder=False, subset=pipelines.Subset(fraction, "b"))
    assert labels_of(train) == per_class["b"]


# ------------------------------------------------------------------------------- TFRecords


def example(image, label):
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


GARBAGE = b"\x00garbage, not a tf.train.Example"


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Two ImageNet-layout shards, 1-based labels 1..3: flat PNGs (level = identity), a record
    that is not an Example, one whose image does not decode, one with label 9 (bad)."""
    root = tmp_path_factory.mktemp("subset_records")
    rng = np.random.default_rng(0)
    stream = []  # (label, level or None) in stored order
    for shard in range(2):
        items = []
        for j in range(22):
            label = int(rng.integers(1, 4))
            level = 3 + 5 * (22 * shard + j)
            items.append((example(png(level), label), (label, level)))
        items.insert(3, (GARBAGE, (None, None)))
        items.insert(8, (example(b"not an image", 2), (2, None)))
        items.insert(12, (example(png(250), 9), (9, 250)))
        with tf.io.TFRecordWriter(str(root / f"train-{shard:05d}-of-00002")) as writer:
            for record, _ in items:
                writer.write(record)
        stream += [info for _, info in items]
    return root, stream


def counter_rule(stream, fraction, num_classes):
    """Part of each record by the per-class counter rule (None: not parseable)."""
    f, seen, parts = Fraction(fraction).limit_denominator(10**6), Counter(), []
    for label, _ in stream:
        if label is None:
            parts.append(None)
            continue
        slot = label if 0 <= label <= num_classes else -1  # bad labels share a counter
        k = seen[slot]
        seen[slot] += 1
        parts.append("b" if (k + 1) * f // 1 > k * f // 1 else "a")
    return parts


def test_records_per_class_counter(records):
    root, stream = records
    spec = f"tfrecord:{root}/train-*"
    kwargs = dict(one_based_labels=True, num_classes=3, drop_remainder=False)
    fraction = 0.35
    parts = counter_rule(stream, fraction, 3)
    per_label = Counter(lab for (lab, _), p in zip(stream, parts) if p == "b" and lab in (1, 2, 3))
    n_label = Counter(lab for lab, _ in stream if lab in (1, 2, 3))
    assert per_label == {c: int(Fraction(str(fraction)) * n) for c, n in n_label.items()}
    expected = {part: Counter(level for (label, level), p in zip(stream, parts)
                              if p == part and level is not None and label != 9)
                for part in "ab"}
    assert not set(expected["a"]) & set(expected["b"])
    assert sum((expected["a"] + expected["b"]).values()) == 44  # every good record, once
    for part in "ab":
        ds = pipelines.get_dataset(spec, "train", 8, 5, training=False,
                                   subset=pipelines.Subset(fraction, part), **kwargs)
        assert levels(ds) == expected[part] and ds.num_examples is None
        bad = ds.bad_data.names
        assert any(n.endswith("00000-of-00002#3") for n in bad)  # the garbage: in neither part
        for index in (8, 12):  # undecodable image, label 9: skipped in their own part only
            assert any(n.endswith(f"00000-of-00002#{index}") for n in bad) == (parts[index] == part)
    # The same examples with two input pipelines (each reads all, keeps every other one).
    sharded = Counter()
    for worker in range(2):
        context = tf.distribute.InputContext(2, worker, 2)
        sharded += levels(pipelines.get_dataset(spec, "train", 8, 4, training=False,
                                                subset=pipelines.Subset(fraction, "b"),
                                                input_context=context, **kwargs))
    assert sharded == expected["b"]
    train = pipelines.get_dataset(spec, "train", 8, 4, training=True, seed=1,
                                  subset=pipelines.Subset(fraction, "a"), **kwargs)
    assert sum(labels_of(train).values()) == sum(expected["a"].values())


def test_records_repeat_and_raise(records):
    root, stream = records
    spec = f"tfrecord:{root}/train-*"
    parts = counter_rule(stream, 0.2, 3)
    n = sum(1 for (label, level), p in zip(stream, parts) if p == "b" and level and label != 9)
    ds = pipelines.get_dataset(spec, "train", 8, n, training=True, repeat=True, seed=0,
                               one_based_labels=True, num_classes=3, subset=B)
    batches = [y.numpy() for _, y in ds.take(3)]
    assert all(len(y) == n for y in batches)
    assert sorted(batches[0]) == sorted(batches[1]) == sorted(batches[2])  # each pass: part b
    raising = pipelines.get_dataset(spec, "train", 8, 4, training=False, on_error="raise",
                                    one_based_labels=True, num_classes=3, subset=A)
    with pytest.raises(Exception, match=r"bad example .*00000-of-00002#3"):
        list(raising)


# ------------------------------------------------------------------------------------ TFDS


def test_tfds_cifar10_counter_in_stored_order(tmp_path, no_download):  # noqa: F811
    rng = np.random.default_rng(1)
    examples = [{"id": f"train_{i}", "label": int(rng.integers(0, 3)),
                 "image": np.full((32, 32, 3), 5 + 8 * i, np.uint8)} for i in range(30)]
    prepare_tfds("cifar10", str(tmp_path), {"train": [examples[:17], examples[17:]]})
    whole = pipelines.get_dataset("cifar10", "train", 32, 8, training=False,
                                  data_dir=str(tmp_path), deterministic=True)
    order = [(int(y), int(round(float(x.mean()))))
             for xs, ys in whole for x, y in zip(xs.numpy(), ys.numpy())]
    assert len(order) == 30
    parts = counter_rule(order, 0.25, 10)
    for part in "ab":
        ds = pipelines.get_dataset("cifar10", "train", 32, 8, training=False,
                                   data_dir=str(tmp_path), subset=pipelines.Subset(0.25, part))
        assert levels(ds) == Counter(lv for (_, lv), p in zip(order, parts) if p == part)
        assert ds.num_examples is None


# ---------------------------------------------------------------------------------- speech


def test_speech_folder_partition(tmp_path):
    for cls in range(2):
        for i in range(6):
            write(str(tmp_path / "train" / f"w{cls}" / f"{i}.wav"), RATE,
                  chirp(300 + 500 * cls + 60 * i, 0.3))
    spec = f"speech:{tmp_path}"

    def features(subset, **kwargs):
        ds = speech.get_speech_dataset(spec, "train", 4, False, subset=subset,
                                       num_frames=20, **kwargs)
        out = Counter()
        for x, y in ds:
            for f, label in zip(x.numpy(), y.numpy()):
                out[(np.round(f, 3).tobytes(), int(label))] += 1
        return ds, out

    _, full = features(None)
    assert sum(full.values()) == len(full) == 12
    sub = pipelines.Subset(0.34, "b")  # floor(0.34 * 6) = 2 of each class
    a, fa = features(pipelines.Subset(0.34, "a"))
    b, fb = features(sub)
    assert (a.num_examples, b.num_examples) == (8, 4)
    assert not set(fa) & set(fb) and fa + fb == full
    assert Counter(label for _, label in fb) == {0: 2, 1: 2}
    _, again = features(sub, seed=3)
    assert again == fb
    via_core = pipelines.get_dataset(spec, "train", None, 4, False, subset=sub, num_frames=20)
    assert via_core.num_examples == 4


def test_speech_commands_counter_in_stored_order(tmp_path, no_download):  # noqa: F811
    labels = [0, 1, 2, 1, 0, 0, 2, 1, 1, 0, 2, 2, 0]
    clips = [{"audio": chirp(300 + 100 * i, 0.05), "label": k} for i, k in enumerate(labels)]
    prepare_tfds("speech_commands", str(tmp_path), {"train": [clips]})
    parts = counter_rule([(k, None) for k in labels], 0.25, 12)
    for part in "ab":
        # deterministic=True: the output keeps the stored order too, so the label sequence
        # pins down which clips are in the part (the split itself never depends on it).
        ds = speech.get_speech_dataset("speech_commands", "train", 3, False, num_frames=3,
                                       data_dir=str(tmp_path), deterministic=True,
                                       subset=pipelines.Subset(0.25, part))
        got = [int(v) for _, y in ds for v in y.numpy()]
        assert got == [k for k, p in zip(labels, parts) if p == part]
        assert ds.num_examples is None
    assert parts.count("b") == 2 + 0 + 1  # floor(0.25 * n) of 5, 3 and 4 (with 5 x label 0)


def test_tfds_imagenet_encoded_counter(tmp_path, no_download):  # noqa: F811
    labels = [5, 17, 5, 300, 17, 5, 5, 300, 17, 17, 5]
    examples = [{"file_name": f"train_{i}.JPEG", "label": k,
                 "image": np.full((20, 24, 3), 10 + 20 * i, np.uint8)}
                for i, k in enumerate(labels)]
    prepare_tfds("imagenet2012", str(tmp_path), {"train": [examples]})
    parts = counter_rule([(k, None) for k in labels], 0.4, 1000)
    for part in "ab":
        ds = pipelines.get_dataset("imagenet", "train", 8, 4, training=False,
                                   data_dir=str(tmp_path), deterministic=True,
                                   subset=pipelines.Subset(0.4, part))
        got = [int(v) for _, y in ds for v in y.numpy()]
        assert got == [k for k, p in zip(labels, parts) if p == part]
