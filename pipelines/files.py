"""File-based sources: image folders (`split/<class>/<image>`) and ImageNet TFRecord shards.

Both give (name, encoded bytes or serialized record) pairs; the name of every example (its path,
or `shard#record`) travels with it so that a bad one can be reported by name.
"""

import glob
import os

import tensorflow as tf

graph_only = tf.autograph.experimental.do_not_convert  # see `pipelines.bad_data.graph_only`

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def list_class_folder(root, split, extensions, what="image", item="<image>"):
    """Lists `root[/split]/<class>/<file>` -> (paths, labels, class_names), sorted.

    Classes are the sorted subfolder names, so labels do not depend on which folders happen to
    be empty (an empty class folder keeps its index). Files are those ending in one of
    `extensions` (any case); a file that is not what its name says is found out when decoded,
    and skipped or raised there. `what` and `item` word the errors.
    """
    folder = os.path.join(root, split) if split else root
    if not os.path.isdir(folder):
        raise ValueError(
            f"no {what} folder at {folder!r}: expected {folder}/<class>/{item} "
            f"(split {split!r} of {root!r})"
        )
    class_names = sorted(
        d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))
    )
    if not class_names:
        raise ValueError(f"no class folders in {folder!r}: expected {folder}/<class>/{item}")
    paths, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(folder, name)
        for file in sorted(os.listdir(class_dir)):
            if file.lower().endswith(extensions):
                paths.append(os.path.join(class_dir, file))
                labels.append(label)
    if not paths:
        raise ValueError(f"no {what} files ({', '.join(extensions)}) in the class folders of "
                         f"{folder!r}")
    return paths, labels, class_names


def list_image_folder(root, split=None):
    """`root[/split]/<class>/<image>` -> (paths, labels, class_names); see `list_class_folder`."""
    return list_class_folder(root, split, IMAGE_EXTENSIONS)


def empty_classes(labels, class_names):
    used = set(labels)
    return [name for i, name in enumerate(class_names) if i not in used]


def tfrecord_files(pattern):
    """Sorted files matching `pattern`; a clear error if there are none."""
    files = sorted(glob.glob(pattern))
    if not files:
        folder = os.path.dirname(pattern) or "."
        where = "" if os.path.isdir(folder) else f" ({folder!r} does not exist)"
        raise ValueError(
            f"no TFRecord files matching {os.path.basename(pattern)!r} in {folder!r}{where}"
        )
    return files


def named_records(files, cycle_length=None, deterministic=None):
    """(name, serialized record) from TFRecord shards, read with a parallel interleave; names
    are `shard#index`."""

    @graph_only
    def read(path):
        records = tf.data.TFRecordDataset(path)
        return records.enumerate().map(graph_only(
            lambda i, record: (tf.strings.join([path, "#", tf.strings.as_string(i)]), record)
        ))

    return tf.data.Dataset.from_tensor_slices(files).interleave(
        read,
        cycle_length=cycle_length or min(len(files), 16),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )


IMAGENET_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}


def parse_imagenet_record(serialized, one_based_labels=False):
    """(encoded image, int32 label) of a record in the usual ImageNet TFRecord layout
    (`image/encoded`, `image/class/label`; labels 1..1000 there when `one_based_labels`)."""
    features = tf.io.parse_single_example(serialized, IMAGENET_FEATURES)
    label = tf.cast(features["image/class/label"], tf.int32)
    if one_based_labels:
        label -= 1
    return features["image/encoded"], label
