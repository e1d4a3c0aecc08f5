"""CIFAR-10 / CIFAR-100 from the standard "python version" pickle folders (no download).

Layout (as unpacked from cifar-10-python.tar.gz / cifar-100-python.tar.gz):

* CIFAR-10: ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5``, ``test_batch``
  and ``batches.meta``; labels under ``b"labels"``.
* CIFAR-100: ``cifar-100-python/`` with ``train``, ``test`` and ``meta``; labels under
  ``b"fine_labels"``.

Each batch is a (Python 2) pickle of a dict whose ``b"data"`` is uint8 (N, 3072): each row
is one image, row-major channel-first (1024 red, then 1024 green, then 1024 blue values).
The files are read with a restricted unpickler that only allows numpy arrays, so a batch file
cannot run code on load.
"""

import os
import pickle

import numpy as np

IMAGE_SHAPE = (32, 32, 3)

_LAYOUTS = {
    10: {
        "folder": "cifar-10-batches-py",
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
        "meta": "batches.meta",
        "label_key": "labels",
        "names_key": "label_names",
        "describe": "CIFAR-10 python batches (data_batch_1..5, test_batch)",
    },
    100: {
        "folder": "cifar-100-python",
        "train": ("train",),
        "test": ("test",),
        "meta": "meta",
        "label_key": "fine_labels",
        "names_key": "fine_label_names",
        "describe": "CIFAR-100 python files (train, test)",
    },
}

# Globals a CIFAR pickle legitimately needs: numpy array reconstruction (numpy 1 and 2 paths),
# plus `_codecs.encode`, which protocol-2 pickles written by Python 3 use for raw bytes.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def load_cifar_pickle(path, split, num_classes=10):
    """Load a CIFAR-10/100 split from the python-pickle batch folder.

    Args:
        path: the batch folder itself (``.../cifar-10-batches-py`` or ``.../cifar-100-python``)
            or its parent directory.
        split: "train" or "test". CIFAR has no validation split ("val"/"validation" raise a
            ValueError saying so; hold out part of "train" instead).
        num_classes: 10 (CIFAR-10, ``b"labels"``) or 100 (CIFAR-100, ``b"fine_labels"``).

    Returns:
        `(images, labels)`: numpy uint8 [N, 32, 32, 3] (HWC) and int32 [N]. Training batches
        are concatenated in order (data_batch_1 first).

    Raises:
        FileNotFoundError: `path` or the expected batch files do not exist (message names the
            path and the files expected there).
        ValueError: bad split / num_classes, or a batch file that is corrupt or not in the
            CIFAR format (message names the file).
    """
    layout = _layout(num_classes)
    files = _split_files(layout, split)
    folder = _find_folder(path, layout)
    missing = [name for name in files if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise FileNotFoundError(
            f"no {layout['describe']} in {folder}: missing {', '.join(missing)} "
            f"(needed for split {split!r})"
        )
    images, labels = [], []
    for name in files:
        batch_images, batch_labels = _read_batch(os.path.join(folder, name), layout, num_classes)
        images.append(batch_images)
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def load_cifar_label_names(path, num_classes=10):
    """Return the class names (list of str, index = label) from ``batches.meta`` / ``meta``.

    `path` is the batch folder or its parent, as for `load_cifar_pickle`. CIFAR-100 gives the
    100 fine label names. Raises FileNotFoundError / ValueError like `load_cifar_pickle`.
    """
    layout = _layout(num_classes)
    folder = _find_folder(path, layout)
    meta_path = os.path.join(folder, layout["meta"])
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(
            f"no CIFAR-{num_classes} metadata file {layout['meta']} in {folder}"
        )
    meta = _unpickle(meta_path)
    names = _get(meta, layout["names_key"])
    if names is None or len(names) != num_classes:
        raise ValueError(
            f"{meta_path} is not a CIFAR-{num_classes} metadata file: expected "
            f"{num_classes} entries under {layout['names_key']!r}"
        )
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _layout(num_classes):
    if num_classes not in _LAYOUTS:
        raise ValueError(
            f"num_classes must be 10 (CIFAR-10) or 100 (CIFAR-100), got {num_classes!r}"
        )
    return _LAYOUTS[num_classes]


def _split_files(layout, split):
    if split in ("val", "validation"):
        raise ValueError(
            f"CIFAR has no validation split (got {split!r}); use 'train' or 'test', or hold out "
            "part of 'train' for validation"
        )
    if split not in ("train", "test"):
        raise ValueError(f"unknown CIFAR split {split!r}; expected 'train' or 'test'")
    return layout[split]


def _find_folder(path, layout):
    """The batch folder: `path` itself if it holds CIFAR files, else `path/<standard name>`."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"CIFAR path {path} does not exist or is not a directory; expected the "
            f"{layout['folder']} folder or its parent"
        )
    known = (*layout["train"], *layout["test"], layout["meta"])
    if any(os.path.isfile(os.path.join(path, name)) for name in known):
        return path
    child = os.path.join(path, layout["folder"])
    if os.path.isdir(child):
        return child
    raise FileNotFoundError(
        f"no {layout['describe']} in {path} (nor a {layout['folder']} folder there)"
    )


def _unpickle(file_path):
    try:
        with open(file_path, "rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except Exception as e:  # corrupt, truncated, wrong format, disallowed globals, ...
        raise ValueError(f"could not read CIFAR file {file_path}: {type(e).__name__}: {e}") from e


def _get(batch, key):
    if not isinstance(batch, dict):
        return None
    value = batch.get(key.encode("ascii"))
    return batch.get(key) if value is None else value


def _read_batch(file_path, layout, num_classes):
    batch = _unpickle(file_path)
    data, labels = _get(batch, "data"), _get(batch, layout["label_key"])
    if data is None or labels is None:
        raise ValueError(
            f"{file_path} is not a CIFAR-{num_classes} batch: expected a dict with b'data' and "
            f"b'{layout['label_key']}'"
        )
    data = np.asarray(data)
    labels = np.asarray(labels)
    if labels.size == 0:
        labels = labels.astype(np.int64)
    row = int(np.prod(IMAGE_SHAPE))
    if data.ndim != 2 or data.shape[1] != row or not np.issubdtype(data.dtype, np.integer):
        raise ValueError(
            f"{file_path}: b'data' must be an integer array of shape (N, {row}), got "
            f"{data.dtype} {data.shape}"
        )
    if data.size and (data.min() < 0 or data.max() > 255):
        raise ValueError(f"{file_path}: pixel values outside 0..255")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{file_path}: expected {data.shape[0]} integer labels, got {labels.dtype} "
            f"{labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{file_path}: labels outside 0..{num_classes - 1}")
    # Rows are channel-first (3, 32, 32); move the channel axis last.
    images = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)
