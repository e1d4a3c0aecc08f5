"""Per-example image ops of the official ImageNet and CIFAR training/eval recipes (tf.data).

Every op works on a single example (no batch dimension; `resize` also takes a batch), runs
eagerly and inside `tf.data.Dataset.map`, and returns float32 RGB in [0, 255]: models normalise
inside. Random ops take an explicit `seed`, a shape-[2] int32/int64 tensor fed to the
`tf.random.stateless_*` / `tf.image.stateless_*` ops, so the same seed always gives the same
output and the caller decides where seeds come from (e.g. `Dataset.random(...).batch(2)` or
`stateless_fold_in(epoch_seed, example_index)`). Seeds are cast to int64 first, so int32 and
int64 seeds with the same values agree. Sub-seeds are derived with
`tf.random.experimental.stateless_split`.

Which recipe each op follows:

- `decode_rgb`: PIL's ``Image.open(f).convert("RGB")`` as used by torchvision's ImageFolder
  loader. JPEGs are decoded with ``dct_method="INTEGER_ACCURATE"`` (libjpeg's ISLOW IDCT, what
  PIL uses; bit-exact with PIL for RGB/grey JPEGs, whereas TF's default INTEGER_FAST differs by
  up to several dozen levels on noisy high-quality JPEGs). CMYK/YCCK JPEGs are converted to RGB
  by TF itself (Adobe-inverted CMYK, as written by PIL and Photoshop), within 1 level of PIL.
  8-bit-or-less palette BMPs are decoded here because `tf.io.decode_bmp` ignores the palette
  (it returns the raw indices) and rejects 1-bit BMPs.
- `sample_crop_window` / `random_resized_crop`: torchvision ``RandomResizedCrop`` (the
  Inception crop of the PyTorch reference scripts, also used by the TF Model Garden via
  `decode_and_crop_jpeg`): up to 10 attempts of area ~ U(area_range) * H * W and log-uniform
  aspect ratio, accepted if the window fits, otherwise torchvision's centre-crop fallback
  clamped to the aspect-ratio range. (`tf.image.stateless_sample_distorted_bounding_box` is not
  used: it samples the aspect ratio uniformly, not log-uniformly, and falls back to the whole
  image.) The crop is resized bilinearly with antialiasing off, as in the TF reference recipe.
- `imagenet_train`: torchvision reference ``--train-crop-size`` pipeline: RandomResizedCrop,
  RandomHorizontalFlip(0.5), and optionally ColorJitter(s, s, s) (brightness, contrast,
  saturation; applied in the fixed order B, C, S instead of torchvision's random order).
- `imagenet_eval`: torchvision ``Resize(round(size / crop_fraction))`` (shorter side, longer
  side truncated as torchvision does) + ``CenterCrop(size)``; bilinear, antialias optional.
- `cifar_train` / `cifar_eval`: the ResNet-paper CIFAR recipe (torchvision
  ``RandomCrop(32, padding=4)`` with zero padding + ``RandomHorizontalFlip``).

The fused JPEG path: `tf.image.decode_and_crop_jpeg` decodes only the crop window, but for
chroma-subsampled JPEGs (4:2:0, 4:2:2, 4:1:1 -- i.e. nearly all photos) libjpeg-turbo's fancy
chroma upsampling treats the window edge as an image edge, so one boundary column can differ from
decode-then-crop by tens of levels. `random_resized_crop` therefore decodes the window grown by a
2-pixel margin (clamped to the image) and slices the margin off, which makes the fused path
bit-identical to `decode_rgb` followed by the same crop.
"""

import math

import tensorflow as tf

__all__ = [
    "cifar_eval",
    "cifar_train",
    "decode_rgb",
    "imagenet_eval",
    "imagenet_train",
    "is_jpeg",
    "random_color_jitter",
    "random_resized_crop",
    "resize",
    "sample_crop_window",
]

JPEG_DCT_METHOD = "INTEGER_ACCURATE"
"""libjpeg's accurate integer IDCT, the one PIL (hence torchvision) decodes with."""

_FUSED_CROP_MARGIN = 2
"""Extra pixels decoded around a fused JPEG crop window so chroma upsampling at the window edge
sees its real neighbours (1 is enough for h2 subsampling; 2 for safety)."""

_BMP_HEADER_BYTES = 54  # 14-byte file header + 40-byte BITMAPINFOHEADER


def _as_seed(seed):
    """The seed as a shape-[2] int64 tensor: int32 and int64 seeds with the same values (e.g.
    a Python list, which converts to int32) then give the same random numbers."""
    return tf.cast(tf.convert_to_tensor(seed), tf.int64)


def _split(seed, num):
    return tf.unstack(tf.random.experimental.stateless_split(_as_seed(seed), num), num=num)


# ----------------------------------------------------------------------------------- decoding


def is_jpeg(encoded):
    """Scalar bool tensor: `encoded` starts with the JPEG SOI marker + a marker (FF D8 FF)."""
    return tf.equal(tf.strings.substr(encoded, 0, 3), b"\xff\xd8\xff")


def _decode_jpeg(encoded):
    return tf.io.decode_jpeg(encoded, channels=3, dct_method=JPEG_DCT_METHOD)


_BMP_FIELDS = {  # little-endian unsigned header fields: (offset, bytes)
    "data_offset": (10, 4),
    "dib_size": (14, 4),  # DIB header size
    "width": (18, 4),
    "height": (22, 4),
    "bpp": (28, 2),
    "compression": (30, 4),
    "colors_used": (46, 4),
}


def _bmp_header(encoded):
    """First 54 bytes of `encoded`, zero-padded so short inputs can still be parsed safely."""
    head = tf.strings.substr(encoded, 0, _BMP_HEADER_BYTES)
    return tf.strings.substr(head + b"\x00" * _BMP_HEADER_BYTES, 0, _BMP_HEADER_BYTES)


def _bmp_fields(encoded):
    """(header, {name: int64 scalar} of `_BMP_FIELDS`), all fields from one parse of the header
    (a weighted sum of its bytes: a handful of graph nodes instead of a few per field)."""
    header = _bmp_header(encoded)
    weights = [[0] * len(_BMP_FIELDS) for _ in range(_BMP_HEADER_BYTES)]
    for k, (offset, nbytes) in enumerate(_BMP_FIELDS.values()):
        for i in range(nbytes):
            weights[offset + i][k] = 256**i
    raw = tf.cast(tf.io.decode_raw(header, tf.uint8), tf.int64)
    values = tf.reduce_sum(raw[:, None] * tf.constant(weights, tf.int64), axis=0)
    return header, dict(zip(_BMP_FIELDS, tf.unstack(values, num=len(_BMP_FIELDS))))


def _is_palette_bmp(encoded, fields=None):
    """An uncompressed (BI_RGB) BMP with a BITMAPINFOHEADER-or-later header and 1/2/4/8 bpp.
    `fields`: `_bmp_fields(encoded)` if already parsed."""
    header, field = fields or _bmp_fields(encoded)
    return tf.reduce_all(
        tf.stack(
            [
                tf.equal(tf.strings.substr(header, 0, 2), b"BM"),
                field["dib_size"] >= 40,
                tf.reduce_any(tf.equal(field["bpp"], [1, 2, 4, 8])),
                tf.equal(field["compression"], 0),  # BI_RGB
            ]
        )
    )


def _decode_palette_bmp(encoded, fields=None):
    """Decode an uncompressed palette BMP (1/2/4/8 bpp) to uint8 RGB with plain TF ops.
    `fields`: `_bmp_fields(encoded)` if already parsed."""
    _, field = fields or _bmp_fields(encoded)
    data_offset, dib_size = field["data_offset"], field["dib_size"]
    width, height = field["width"], field["height"]
    height = tf.where(height >= 2**31, height - 2**32, height)  # signed: < 0 means top-down
    rows = tf.abs(height)
    bpp = field["bpp"]
    colors_used = field["colors_used"]
    num_colors = tf.where(
        colors_used > 0, colors_used, tf.bitwise.left_shift(tf.constant(1, tf.int64), bpp)
    )

    palette = tf.io.decode_raw(tf.strings.substr(encoded, 14 + dib_size, 4 * num_colors), tf.uint8)
    palette = tf.reverse(tf.reshape(palette, [-1, 4])[:, :3], axis=[1])  # BGRx -> RGB

    row_bytes = (width * bpp + 31) // 32 * 4  # rows are padded to 4 bytes
    data = tf.io.decode_raw(tf.strings.substr(encoded, data_offset, row_bytes * rows), tf.uint8)
    data = tf.reshape(tf.cast(data, tf.int32), tf.stack([rows, row_bytes]))
    bpp32 = tf.cast(bpp, tf.int32)
    per_byte = 8 // bpp32
    shifts = bpp32 * (per_byte - 1 - tf.range(per_byte))  # most significant bits first
    mask = tf.bitwise.left_shift(tf.constant(1), bpp32) - 1
    indices = tf.bitwise.bitwise_and(tf.bitwise.right_shift(data[:, :, None], shifts), mask)
    indices = tf.reshape(indices, tf.stack([rows, -1]))[:, :width]
    indices = tf.minimum(indices, tf.shape(palette)[0] - 1)
    image = tf.gather(palette, indices)
    return tf.cond(height > 0, lambda: tf.reverse(image, axis=[0]), lambda: image)


def _decode_generic(encoded):
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _decode_non_jpeg(encoded):
    fields = _bmp_fields(encoded)  # one header parse for the test and the decode
    return tf.cond(
        _is_palette_bmp(encoded, fields),
        lambda: _decode_palette_bmp(encoded, fields),
        lambda: _decode_generic(encoded),
    )


def decode_rgb(encoded):
    """Decode a JPEG, PNG, GIF (first frame) or BMP string to uint8 RGB [H, W, 3].

    Matches PIL's ``.convert("RGB")``: grey is replicated to three channels, alpha is dropped
    (not composited), palettes are applied, CMYK JPEGs are converted to RGB, 16-bit PNGs are
    scaled to 8 bits (PIL clips them instead). JPEGs use the accurate IDCT (see module doc).
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)
    image = tf.cond(
        is_jpeg(encoded), lambda: _decode_jpeg(encoded), lambda: _decode_non_jpeg(encoded)
    )
    image.set_shape([None, None, 3])
    return image


# --------------------------------------------------------------------------------- cropping


def sample_crop_window(
    image_size_hw,
    seed,
    area_range=(0.08, 1.0),
    aspect_ratio_range=(3 / 4, 4 / 3),
    max_attempts=10,
):
    """torchvision ``RandomResizedCrop.get_params`` with stateless randomness.

    `image_size_hw` is (height, width) (a longer shape such as [H, W, C] is accepted; only the
    first two entries are used). Each of `max_attempts` attempts draws
    ``area = U(area_range) * H * W`` and ``aspect = exp(U(log(aspect_ratio_range)))``, sets
    ``w = round(sqrt(area * aspect))``, ``h = round(sqrt(area / aspect))`` (half to even, like
    Python's `round`) and is accepted if ``0 < w <= W and 0 < h <= H``; the first accepted
    attempt wins, with a uniform offset. If none fits, the fallback is torchvision's: the
    whole image, cropped centrally to the nearest aspect ratio inside the range.

    Returns int32 scalars (offset_y, offset_x, height, width).
    """
    size = tf.cast(tf.convert_to_tensor(image_size_hw)[:2], tf.int32)
    height, width = size[0], size[1]
    height_f, width_f = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    area_seed, ratio_seed, y_seed, x_seed = _split(seed, 4)
    shape = [max_attempts]

    def uniform(s, lo=0.0, hi=1.0):
        return tf.cast(tf.random.stateless_uniform(shape, s, lo, hi, tf.float32), tf.float64)

    min_ratio, max_ratio = aspect_ratio_range
    target_area = height_f * width_f * uniform(area_seed, area_range[0], area_range[1])
    log_ratio = uniform(ratio_seed, math.log(min_ratio), math.log(max_ratio))
    aspect = tf.exp(log_ratio)
    w = tf.cast(tf.round(tf.sqrt(target_area * aspect)), tf.int32)
    h = tf.cast(tf.round(tf.sqrt(target_area / aspect)), tf.int32)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    # torch.randint(0, H - h + 1): floor(U[0, 1) * (H - h + 1)), clamped against rounding.
    y_range, x_range = tf.maximum(height - h + 1, 1), tf.maximum(width - w + 1, 1)
    i = tf.cast(tf.floor(uniform(y_seed) * tf.cast(y_range, tf.float64)), tf.int32)
    j = tf.cast(tf.floor(uniform(x_seed) * tf.cast(x_range, tf.float64)), tf.int32)
    i, j = tf.minimum(i, y_range - 1), tf.minimum(j, x_range - 1)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)  # first True (0 if none)

    # Fallback to a central crop (torchvision, verbatim).
    in_ratio = width_f / height_f
    lo_ratio, hi_ratio = min(aspect_ratio_range), max(aspect_ratio_range)
    too_tall, too_wide = in_ratio < lo_ratio, in_ratio > hi_ratio
    round_int = lambda x: tf.cast(tf.round(x), tf.int32)
    fb_w = tf.where(too_wide, round_int(height_f * hi_ratio), width)
    fb_h = tf.where(too_tall, round_int(width_f / lo_ratio), height)
    fallback = tf.stack([(height - fb_h) // 2, (width - fb_w) // 2, fb_h, fb_w])

    sampled = tf.stack([i[first], j[first], h[first], w[first]])
    window = tf.where(tf.reduce_any(fits), sampled, fallback)
    return tuple(tf.unstack(window, num=4))


def _crop(image, window):
    offset_y, offset_x, height, width = window
    return image[offset_y : offset_y + height, offset_x : offset_x + width]


def _decode_jpeg_window(encoded, image_hw, window):
    """`decode_and_crop_jpeg` of `window`, grown by a margin so it equals decode-then-crop."""
    offset_y, offset_x, height, width = window
    margin = _FUSED_CROP_MARGIN
    y0, x0 = tf.maximum(offset_y - margin, 0), tf.maximum(offset_x - margin, 0)
    y1 = tf.minimum(offset_y + height + margin, image_hw[0])
    x1 = tf.minimum(offset_x + width + margin, image_hw[1])
    grown = tf.image.decode_and_crop_jpeg(
        encoded, tf.stack([y0, x0, y1 - y0, x1 - x0]), channels=3, dct_method=JPEG_DCT_METHOD
    )
    grown.set_shape([None, None, 3])
    return _crop(grown, (offset_y - y0, offset_x - x0, height, width))


def random_resized_crop(
    encoded,
    size,
    seed,
    area_range=(0.08, 1.0),
    aspect_ratio_range=(3 / 4, 4 / 3),
):
    """Decode + Inception-style random crop + bilinear resize to float32 [size, size, 3].

    JPEGs take the fused path (`extract_jpeg_shape` + `decode_and_crop_jpeg`, decoding only the
    window plus a 2-pixel margin); other formats are decoded fully and cropped. For the same
    seed both paths pick the same window and give identical pixels.
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)
    jpeg = is_jpeg(encoded)

    # One window sampler for both paths (it is the largest part of the traced graph, and graph
    # size is what `get_dataset` start-up costs): first the image size (a JPEG's from its
    # header, other formats decoded whole), then the window, then the crop.
    def jpeg_shape():
        hw = tf.image.extract_jpeg_shape(encoded, output_type=tf.int32)[:2]
        return tf.zeros([0, 0, 3], tf.uint8), hw

    def decode_whole():
        image = _decode_non_jpeg(encoded)
        return image, tf.shape(image, out_type=tf.int32)[:2]

    image, image_hw = tf.cond(jpeg, jpeg_shape, decode_whole)
    window = sample_crop_window(image_hw, seed, area_range, aspect_ratio_range)
    crop = tf.cond(jpeg, lambda: _decode_jpeg_window(encoded, image_hw, window),
                   lambda: _crop(image, window))
    crop.set_shape([None, None, 3])
    return resize(crop, size)


def resize(image, size, antialias=False):
    """Bilinear resize of an image [H, W, C] or batch [N, H, W, C] to (size, size), float32.

    Half-pixel centres (TF2 / PIL / torchvision convention); `antialias` off by default as in
    the TF reference recipes (torchvision with PIL images always antialiases when shrinking).
    """
    image = tf.convert_to_tensor(image)
    if not image.dtype.is_floating:
        image = tf.cast(image, tf.float32)
    out = tf.image.resize(image, [size, size], method="bilinear", antialias=antialias)
    return tf.cast(out, tf.float32)


# ------------------------------------------------------------------------------- ImageNet


def _blend(image, other, factor):
    """torchvision ``_blend``: factor * image + (1 - factor) * other, clipped to [0, 255]."""
    return tf.clip_by_value(factor * image + (1.0 - factor) * other, 0.0, 255.0)


def random_color_jitter(image, strength, seed):
    """torchvision ``ColorJitter(brightness=s, contrast=s, saturation=s)`` on float [0, 255] RGB.

    Each factor is drawn from U[max(0, 1 - s), 1 + s]; brightness scales towards black,
    contrast blends with the mean grey level, saturation blends with the per-pixel grey image
    (ITU-R 601-2 luma, as torchvision), each clipped to [0, 255]. Applied in the fixed order
    brightness, contrast, saturation (torchvision permutes the order randomly).
    """
    image = tf.cast(image, tf.float32)
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    factors = tf.random.stateless_uniform([3], _as_seed(seed), lo, hi, tf.float32)
    image = tf.clip_by_value(image * factors[0], 0.0, 255.0)
    image = _blend(image, tf.reduce_mean(tf.image.rgb_to_grayscale(image)), factors[1])
    image = _blend(image, tf.image.rgb_to_grayscale(image), factors[2])
    return image


def imagenet_train(encoded, size, seed, color_jitter=0.0):
    """ImageNet training example: `random_resized_crop` + random horizontal flip (p = 0.5)
    + optional color jitter of strength `color_jitter` (0 disables it). float32 [size, size, 3]."""
    crop_seed, flip_seed, jitter_seed = _split(seed, 3)
    image = random_resized_crop(encoded, size, crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if color_jitter:
        image = random_color_jitter(image, color_jitter, jitter_seed)
    return image


def imagenet_eval(encoded, size, crop_fraction=0.875, antialias=False):
    """ImageNet eval example: resize the shorter side to ``round(size / crop_fraction)`` (256 for
    224), bilinear, then centre-crop (size, size). float32 [size, size, 3].

    Follows torchvision ``Resize`` + ``CenterCrop`` exactly in geometry: the longer side becomes
    ``int(short_target * long / short)`` and the crop offset is ``round((side - size) / 2)``
    (half to even). Needs ``crop_fraction <= 1``.
    """
    image = decode_rgb(encoded)
    target = int(round(size / crop_fraction))
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    short, long = tf.minimum(height, width), tf.maximum(height, width)
    new_long = tf.cast(
        tf.floor(tf.cast(target * long, tf.float64) / tf.cast(short, tf.float64)), tf.int32
    )
    new_h = tf.where(height <= width, target, new_long)
    new_w = tf.where(height <= width, new_long, target)
    image = tf.image.resize(image, tf.stack([new_h, new_w]), "bilinear", antialias=antialias)
    top = tf.cast(tf.round(tf.cast(new_h - size, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_w - size, tf.float32) / 2.0), tf.int32)
    image = _crop(image, (top, left, size, size))
    return tf.ensure_shape(tf.cast(image, tf.float32), [size, size, 3])


# ---------------------------------------------------------------------------------- CIFAR


def cifar_train(image, seed, padding=4, flip=True):
    """CIFAR training example: zero-pad by `padding`, random crop back to H x W, random
    horizontal flip (p = 0.5) unless `flip=False` (digits: a mirrored 2 is no 2).
    uint8/float [H, W, 3] in, float32 [H, W, 3] out."""
    image = tf.cast(tf.convert_to_tensor(image), tf.float32)
    crop_seed, flip_seed = _split(seed, 2)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    offsets = tf.random.stateless_uniform(
        [2], crop_seed, minval=0, maxval=2 * padding + 1, dtype=tf.int32
    )
    out = tf.slice(padded, tf.concat([offsets, [0]], 0), tf.shape(image))
    out.set_shape(image.shape)
    if not flip:
        return out
    return tf.image.stateless_random_flip_left_right(out, flip_seed)


def cifar_eval(image):
    """CIFAR eval example: just the cast to float32 (values stay in [0, 255])."""
    return tf.cast(image, tf.float32)
