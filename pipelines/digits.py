"""The embedded demo data set: scikit-learn's bundled hand-written digits (offline, no download).

`sklearn.datasets.load_digits` ships 1,797 real 8x8 grey-scale images (pixel values 0..16) in
ten classes with scikit-learn itself, so it works on machines without internet. Here they are
turned into small RGB images shaped like the rest of the pipelines expect (uint8, HWC, 3
channels) and split into stratified, disjoint train/val/test parts with a fixed seed.
"""

import functools

import numpy as np

NUM_CLASSES = 10
NUM_EXAMPLES = 1797
MIN_IMAGE_SIZE = 8

_SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "test"}


@functools.lru_cache(maxsize=4)
def _all_images(image_size):
    """All 1,797 digits as read-only uint8 [N, image_size, image_size, 3] plus int32 labels."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) * (255.0 / 16.0)  # [N, 8, 8], 0..255
    if image_size != images.shape[1]:
        resized = tf.image.resize(images[..., None], (image_size, image_size), method="bilinear")
        images = resized.numpy()[..., 0]
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    images = np.repeat(images[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@functools.lru_cache(maxsize=16)
def _split_indices(seed, val_fraction, test_fraction):
    """Sorted index arrays (train, val, test) of a stratified split of the 1,797 digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    indices = np.arange(len(labels))
    rest, test = train_test_split(
        indices, test_size=test_fraction, stratify=labels, random_state=seed
    )
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1.0 - test_fraction),
        stratify=labels[rest],
        random_state=seed,
    )
    out = tuple(np.sort(part) for part in (train, val, test))
    for part in out:
        part.setflags(write=False)
    return out


def digits_split_indices(seed=0, val_fraction=0.1, test_fraction=0.2):
    """Return the indices into `sklearn.datasets.load_digits()` of each split.

    Returns a dict {"train", "val", "test"} -> sorted int array. The three arrays are disjoint
    and together cover all 1,797 examples; each is stratified by class (two successive
    `train_test_split(stratify=...)` calls with `random_state=seed`), so the same seed always
    gives the same split. `val_fraction` and `test_fraction` are fractions of the whole set,
    each in (0, 1) with a sum below 1.
    """
    val_fraction, test_fraction = _check_fractions(val_fraction, test_fraction)
    train, val, test = _split_indices(int(seed), val_fraction, test_fraction)
    return {"train": train, "val": val, "test": test}


def load_digits_split(split, image_size=32, seed=0, val_fraction=0.1, test_fraction=0.2):
    """Load one split of the scikit-learn digits as RGB images.

    Args:
        split: "train", "val" (or "validation") or "test".
        image_size: output height and width (>= 8); the 8x8 digits are scaled from 0..16 to
            0..255 and resized bilinearly (once, for the whole set) to this size.
        seed: random seed of the stratified split; the same seed always gives the same split.
        val_fraction: fraction of all 1,797 examples that go to "val".
        test_fraction: fraction of all 1,797 examples that go to "test"; "train" gets the rest.

    Returns:
        `(images, labels)`: numpy uint8 [N, image_size, image_size, 3] and int32 [N] (0..9).
        The three splits are disjoint and together hold all 1,797 examples.

    Raises:
        ValueError: unknown split, image_size below 8 or fractions out of range.
    """
    key = _SPLIT_ALIASES.get(split) if isinstance(split, str) else None
    if key is None:
        raise ValueError(
            f"unknown digits split {split!r}; expected one of 'train', 'val' "
            "(or 'validation'), 'test'"
        )
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {image_size}")
    indices = digits_split_indices(seed, val_fraction, test_fraction)[key]
    images, labels = _all_images(int(image_size))
    return images[indices], labels[indices]  # fancy indexing copies: writable arrays


def _check_fractions(val_fraction, test_fraction):
    val_fraction, test_fraction = float(val_fraction), float(test_fraction)
    if not (0.0 < val_fraction < 1.0 and 0.0 < test_fraction < 1.0):
        raise ValueError(
            f"val_fraction and test_fraction must be in (0, 1), got {val_fraction} and "
            f"{test_fraction}"
        )
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )
    return val_fraction, test_fraction
