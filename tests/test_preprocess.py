"""Tests for `pipelines.preprocess`: every op is run both eagerly and inside
`tf.data.Dataset.map` (graph mode) through `both`, which asserts the two agree exactly."""

import io
import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import preprocess as pp

# ------------------------------------------------------------------------------ helpers


def photo(h=375, w=500, seed=0, noise=12.0):
    """A photo-like uint8 RGB image: smooth gradients + texture + noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack(
        [
            40 + 180 * xx / w,
            30 + 190 * yy / h,
            128 + 90 * np.sin(xx / 9.0 + yy / 13.0),
        ],
        axis=-1,
    )
    return np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)


def encode(image, fmt, **kwargs):
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def pil_rgb(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def both(fn, *args, static_shape=None):
    """Run `fn(*args)` eagerly and as `from_tensor_slices(...).map(fn)` (graph mode), assert the
    results are identical (values and dtypes), optionally check the graph-mode static shape, and
    return the eager result as numpy."""
    tensors = [tf.convert_to_tensor(a) for a in args]
    eager = fn(*tensors)
    ds = tf.data.Dataset.from_tensor_slices(tuple(t[None] for t in tensors)).map(fn)
    graph = next(iter(ds))
    tf.nest.assert_same_structure(eager, graph)
    for e, g in zip(tf.nest.flatten(eager), tf.nest.flatten(graph)):
        assert e.dtype == g.dtype
        np.testing.assert_array_equal(e.numpy(), g.numpy())
    if static_shape is not None:
        assert ds.element_spec.shape.as_list() == list(static_shape)
    return tf.nest.map_structure(lambda t: t.numpy(), eager)


def windows_for_seeds(image_hw, seeds, **kwargs):
    """sample_crop_window over many seeds in one graph-mode dataset pass -> int [n, 4]."""
    seeds = tf.constant(seeds, tf.int64)
    ds = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: tf.stack(pp.sample_crop_window(image_hw, s, **kwargs))
    )
    return next(iter(ds.batch(len(seeds)))).numpy()


def map_seeds(fn, data, seeds):
    """fn(data, seed) for many seeds in one graph-mode dataset pass -> stacked numpy."""
    seeds = tf.constant(seeds, tf.int64)
    data = tf.fill([len(seeds)], tf.constant(data))
    ds = tf.data.Dataset.from_tensor_slices((data, seeds)).map(fn)
    return next(iter(ds.batch(len(seeds)))).numpy()


def torchvision_windows(h, w, n, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision RandomResizedCrop.get_params transcribed to numpy; [n, 5], last col=fallback."""
    out = []
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(n):
        for _ in range(10):
            target_area = h * w * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            cw = int(round(math.sqrt(target_area * aspect)))
            ch = int(round(math.sqrt(target_area / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                out.append((rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1), ch, cw, 0))
                break
        else:
            out.append((0, 0, 0, 0, 1))
    return np.array(out)


def np_bilinear(image, out_h, out_w):
    """Bilinear resize with half-pixel centres and no antialiasing (TF2 semantics), float64."""
    image = image.astype(np.float64)

    def coords(n_in, n_out):
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        x0 = np.floor(x).astype(int)
        return x0, np.minimum(x0 + 1, n_in - 1), x - x0

    y0, y1, ty = coords(image.shape[0], out_h)
    x0, x1, tx = coords(image.shape[1], out_w)
    rows = image[y0] * (1 - ty)[:, None, None] + image[y1] * ty[:, None, None]
    return rows[:, x0] * (1 - tx)[None, :, None] + rows[:, x1] * tx[None, :, None]


def torchvision_eval_geometry(h, w, size, crop_fraction=0.875):
    """torchvision Resize(int) + CenterCrop(size): resized (h, w) and crop (top, left)."""
    short_target = int(round(size / crop_fraction))
    if h <= w:
        new_h, new_w = short_target, int(short_target * w / h)
    else:
        new_h, new_w = int(short_target * h / w), short_target
    return (new_h, new_w), (int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0)))


SEED = np.array([12, 34], np.int64)
PHOTO = photo()
PHOTO_JPEG = encode(PHOTO, "JPEG", quality=90)  # PIL default: 4:2:0 chroma subsampling


def cmyk_image(h=96, w=128):
    yy, xx = np.mgrid[0:h, 0:w]
    cmyk = np.stack(
        [xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w), (255 - xx * 255 // w) // 2],
        axis=-1,
    ).astype(np.uint8)
    return Image.fromarray(cmyk, "CMYK")


def gif_first_frame_case():
    rng = np.random.default_rng(3)
    frames = [
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).convert("P")
        for _ in range(3)
    ]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)


def _decode_cases():
    """(id, encoded bytes, reference RGB uint8, max abs tolerance)."""
    small = PHOTO[:150, :200]
    rgba = Image.fromarray(np.dstack([small, np.arange(200, dtype=np.uint8)[None].repeat(150, 0)]))
    noisy = np.random.default_rng(5).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    cases = {
        # TF's default INTEGER_FAST IDCT is off by up to ~50 on this one; ISLOW is exact.
        "jpeg_rgb_noise_q100": encode(noisy, "JPEG", quality=100),
        "jpeg_rgb_420": encode(small, "JPEG", quality=90),
        "jpeg_rgb_444_progressive": encode(small, "JPEG", subsampling=0, progressive=True),
        "jpeg_gray": encode(Image.fromarray(small).convert("L"), "JPEG", quality=90),
        "jpeg_cmyk": encode(cmyk_image(), "JPEG", quality=95),
        "jpeg_cmyk_from_rgb": encode(Image.fromarray(small).convert("CMYK"), "JPEG"),
        "png_rgb": encode(small, "PNG"),
        "png_gray": encode(Image.fromarray(small).convert("L"), "PNG"),
        "png_rgba": encode(rgba, "PNG"),
        "png_gray_alpha": encode(rgba.convert("LA"), "PNG"),
        "png_palette": encode(Image.fromarray(small).convert("P"), "PNG"),
        "png_1bit": encode(Image.fromarray(small).convert("1"), "PNG"),
        "gif_animated": gif_first_frame_case(),
        "gif_gray": encode(Image.fromarray(small).convert("L"), "GIF"),
        "bmp_rgb": encode(small, "BMP"),
        "bmp_gray": encode(Image.fromarray(small).convert("L"), "BMP"),
        "bmp_palette_8bit": encode(Image.fromarray(small).convert("P"), "BMP"),
        "bmp_palette_4bit": encode(
            Image.fromarray(small).convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
            "BMP",
            bits=4,
        ),
        "bmp_1bit": encode(Image.fromarray(small).convert("1"), "BMP"),
        "bmp_odd_width_8bit": encode(Image.fromarray(small[:, :37]).convert("P"), "BMP"),
    }
    tolerance = {"jpeg_cmyk": 1, "jpeg_cmyk_from_rgb": 1}  # CMYK->RGB rounding differs by 1
    return [(k, v, pil_rgb(v), tolerance.get(k, 0)) for k, v in cases.items()]


DECODE_CASES = _decode_cases()


# ---------------------------------------------------------------------------------- decoding


def test_is_jpeg():
    for name, data, _, _ in DECODE_CASES:
        assert bool(both(pp.is_jpeg, data)) == name.startswith("jpeg"), name
    assert not bool(both(pp.is_jpeg, b"\xff\xd8"))  # too short


@pytest.mark.parametrize("name,data,ref,tol", DECODE_CASES, ids=[c[0] for c in DECODE_CASES])
def test_decode_rgb_matches_pil(name, data, ref, tol):
    out = both(pp.decode_rgb, data, static_shape=[None, None, 3])
    assert out.dtype == np.uint8 and out.shape == ref.shape
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert diff.max() <= tol, (name, diff.max())


def test_decode_rgb_cmyk_colours():
    """CMYK JPEG: TF's conversion is within 1 of PIL's decode (above) and close to the colours
    of the source CMYK image (JPEG loss only), i.e. not inverted / not channel-swapped."""
    image = cmyk_image()
    out = both(pp.decode_rgb, encode(image, "JPEG", quality=95)).astype(int)
    ref = np.asarray(image.convert("RGB")).astype(int)
    assert np.abs(out - ref).mean() < 2.0 and np.abs(out - ref).max() <= 8


def test_decode_rgb_16bit_png_scales():
    """16-bit PNG -> 8 bits by scaling (v >> 8), where PIL's .convert("RGB") would clip."""
    gray16 = np.random.default_rng(0).integers(0, 65536, (20, 30)).astype(np.uint16)
    out = both(pp.decode_rgb, encode(Image.fromarray(gray16), "PNG"))
    np.testing.assert_array_equal(out, np.repeat((gray16 >> 8).astype(np.uint8)[..., None], 3, 2))


def test_decode_rgb_bottom_up_and_top_down_bmp():
    """A top-down (negative height) 8-bit BMP decodes like the bottom-up one PIL writes."""
    image = Image.fromarray(PHOTO[:40, :52]).convert("P")
    data = bytearray(encode(image, "BMP"))
    width, height = (int.from_bytes(data[o : o + 4], "little", signed=True) for o in (18, 22))
    offset = int.from_bytes(data[10:14], "little")
    row_bytes = (width * 8 + 31) // 32 * 4
    rows = [data[offset + r * row_bytes : offset + (r + 1) * row_bytes] for r in range(height)]
    top_down = data[:offset] + b"".join(reversed(rows))
    top_down[22:26] = (-height).to_bytes(4, "little", signed=True)
    np.testing.assert_array_equal(both(pp.decode_rgb, bytes(top_down)), pil_rgb(bytes(data)))


# ------------------------------------------------------------------------------ crop windows


def _check_windows_valid(windows, h, w):
    oy, ox, ch, cw = windows.T
    assert (oy >= 0).all() and (ox >= 0).all() and (ch > 0).all() and (cw > 0).all()
    assert (oy + ch <= h).all() and (ox + cw <= w).all()


def test_sample_crop_window_eager_equals_graph():
    for seed in ([0, 0], [1, 2], [-5, 99]):
        out = both(
            lambda s: tf.stack(pp.sample_crop_window([375, 500], s)),
            np.array(seed, np.int64),
            static_shape=[4],
        )
        assert out.dtype == np.int32
    window = pp.sample_crop_window(tf.constant([375, 500, 3]), tf.constant([1, 2], tf.int32))
    assert all(t.dtype == tf.int32 and t.shape == () for t in window)


def test_sample_crop_window_statistics():
    h, w, n = 375, 500, 3000
    windows = windows_for_seeds([h, w], [[i, 7] for i in range(n)])
    _check_windows_valid(windows, h, w)
    oy, ox, ch, cw = windows.T.astype(np.float64)
    area = ch * cw / (h * w)
    aspect = cw / ch
    # Rounding h, w to integers moves area/aspect by < 1.5 % for windows this size.
    assert area.min() >= 0.08 * 0.985 and area.max() <= 1.0
    assert aspect.min() >= 0.75 * 0.985 and aspect.max() <= 4 / 3 * 1.015
    assert area.min() < 0.1 and area.max() > 0.9  # covers the range
    assert aspect.min() < 0.77 and aspect.max() > 1.3
    assert ox.min() == 0 and oy.min() == 0 and (ox + cw).max() == w and (oy + ch).max() == h
    # Same distribution as torchvision's algorithm (area, log-uniform aspect, centred offsets).
    ref = torchvision_windows(h, w, 20000, np.random.default_rng(0))
    r_oy, r_ox, r_ch, r_cw = ref[:, :4].T.astype(np.float64)
    for ours, theirs in [
        (area, r_ch * r_cw / (h * w)),
        (np.log(aspect), np.log(r_cw / r_ch)),
        ((oy + ch / 2) / h, (r_oy + r_ch / 2) / h),
        ((ox + cw / 2) / w, (r_ox + r_cw / 2) / w),
    ]:
        se = np.std(theirs) * math.sqrt(1 / n + 1 / len(theirs))
        assert abs(ours.mean() - theirs.mean()) < 4 * se
        assert abs(ours.std() / theirs.std() - 1) < 0.06


def test_sample_crop_window_fallback_rate_matches_torchvision():
    """On a 100x20 image most attempts don't fit: the fallback (w=20, h=round(20/0.75)=27,
    centred) is used only when all 10 attempts fail, as often as in torchvision."""
    n = 3000
    windows = windows_for_seeds([100, 20], [[i, 3] for i in range(n)])
    _check_windows_valid(windows, 100, 20)
    fallback_rate = np.all(windows == [36, 0, 27, 20], axis=1).mean()
    ref_rate = torchvision_windows(100, 20, 20000, np.random.default_rng(1))[:, 4].mean()
    assert 0.15 < ref_rate < 0.3
    assert abs(fallback_rate - ref_rate) < 4 * math.sqrt(ref_rate * (1 - ref_rate) / n)


@pytest.mark.parametrize(
    "hw,kwargs,expected",
    [
        ((1000, 10), {}, (493, 0, 13, 10)),  # too tall: w = W, h = round(W / (3/4))
        ((10, 1000), {}, (0, 493, 10, 13)),  # too wide: h = H, w = round(H * 4/3)
        ((375, 400), {"area_range": (2.0, 3.0)}, (0, 0, 375, 400)),  # ratio in range: whole
        ((300, 90), {"aspect_ratio_range": (0.5, 0.5), "area_range": (1.5, 2.0)}, (60, 0, 180, 90)),
    ],
)
def test_sample_crop_window_fallback_exact(hw, kwargs, expected):
    for seed in range(5):
        out = both(
            lambda s: tf.stack(pp.sample_crop_window(hw, s, **kwargs)),
            np.array([seed, 1], np.int64),
        )
        assert tuple(out) == expected


def test_sample_crop_window_determinism():
    seeds = [[i, 11] for i in range(60)]
    first = windows_for_seeds([375, 500], seeds)
    np.testing.assert_array_equal(first, windows_for_seeds([375, 500], seeds))
    assert len({tuple(r) for r in first}) >= 58
    assert not np.array_equal(first, windows_for_seeds([375, 500], [[i, 12] for i in range(60)]))


# ---------------------------------------------------------------------- random resized crop


@pytest.mark.parametrize(
    "subsampling,progressive,gray",
    [(0, False, False), (1, False, False), (2, False, False), (2, True, False), (2, False, True)],
)
def test_fused_jpeg_window_equals_decode_then_crop(subsampling, progressive, gray):
    """The margin-grown fused decode equals decode-then-crop exactly, for all subsamplings.
    Plain `decode_and_crop_jpeg` does not for subsampled chroma (documented in the module)."""
    image = Image.fromarray(photo(200, 264, seed=4, noise=30))
    image = image.convert("L") if gray else image
    data = encode(image, "JPEG", quality=92, subsampling=subsampling, progressive=progressive)
    full = pp.decode_rgb(data).numpy()
    rng = np.random.default_rng(subsampling)
    windows = [(16, 32, 100, 64), (3, 0, 150, 120), (0, 64, 200, 200), (5, 7, 1, 1)]
    windows += [
        (oy, ox, ch, cw)
        for ch, cw in rng.integers(1, [201, 265], size=(30, 2))
        for oy, ox in [rng.integers(0, [201 - ch, 265 - cw])]
    ]
    plain_differs = False
    for oy, ox, ch, cw in windows:
        fused = both(
            lambda d, win: pp._decode_jpeg_window(d, tf.constant([200, 264]), tf.unstack(win)),
            data,
            np.array([oy, ox, ch, cw], np.int32),
        )
        np.testing.assert_array_equal(fused, full[oy : oy + ch, ox : ox + cw])
        plain = tf.image.decode_and_crop_jpeg(
            data, [oy, ox, ch, cw], channels=3, dct_method=pp.JPEG_DCT_METHOD
        ).numpy()
        plain_differs |= not np.array_equal(plain, full[oy : oy + ch, ox : ox + cw])
    assert plain_differs == (subsampling != 0 and not gray)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF"])
def test_random_resized_crop_shapes_and_range(fmt):
    data = encode(PHOTO, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    out = both(
        lambda d, s: pp.random_resized_crop(d, 224, s), data, SEED, static_shape=[224, 224, 3]
    )
    assert out.dtype == np.float32 and out.shape == (224, 224, 3)
    assert out.min() >= 0 and out.max() <= 255 and out.std() > 10


def test_random_resized_crop_fused_equals_generic_path():
    """The same pixels as JPEG (fused path) and PNG (decode + crop) give identical crops."""
    png = encode(pp.decode_rgb(PHOTO_JPEG).numpy(), "PNG")
    crop = lambda d, s: pp.random_resized_crop(d, 160, s)
    np.testing.assert_array_equal(both(crop, PHOTO_JPEG, SEED), both(crop, png, SEED))
    seeds = [[i, 5] for i in range(16)]
    from_jpeg, from_png = map_seeds(crop, PHOTO_JPEG, seeds), map_seeds(crop, png, seeds)
    np.testing.assert_array_equal(from_jpeg, from_png)
    assert len({float(x.mean()) for x in from_jpeg}) == len(seeds)


def test_random_resized_crop_is_the_sampled_window_resized():
    seed = np.array([4, 4], np.int64)
    oy, ox, ch, cw = (int(v) for v in pp.sample_crop_window([375, 500], seed))
    expected = np_bilinear(pp.decode_rgb(PHOTO_JPEG).numpy()[oy : oy + ch, ox : ox + cw], 96, 96)
    out = both(lambda d, s: pp.random_resized_crop(d, 96, s), PHOTO_JPEG, seed)
    np.testing.assert_allclose(out, expected, atol=2e-3)


def test_random_resized_crop_custom_ranges_and_determinism():
    crop = lambda d, s: pp.random_resized_crop(d, 64, s, (1.0, 1.0), (4 / 3, 4 / 3))
    whole = both(crop, PHOTO_JPEG, SEED)  # 500x375 has ratio 4/3: area 1 -> the whole image
    np.testing.assert_allclose(
        whole, np_bilinear(pp.decode_rgb(PHOTO_JPEG).numpy(), 64, 64), atol=2e-3
    )
    a = both(lambda d, s: pp.random_resized_crop(d, 64, s), PHOTO_JPEG, SEED)
    b = both(lambda d, s: pp.random_resized_crop(d, 64, s), PHOTO_JPEG, SEED + 1)
    np.testing.assert_array_equal(a, pp.random_resized_crop(PHOTO_JPEG, 64, SEED).numpy())
    assert np.abs(a - b).mean() > 1.0


# ---------------------------------------------------------------------------- ImageNet train


def test_imagenet_train_shapes_determinism():
    fn = lambda d, s: pp.imagenet_train(d, 128, s)
    out = both(fn, PHOTO_JPEG, SEED, static_shape=[128, 128, 3])
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 255
    np.testing.assert_array_equal(out, pp.imagenet_train(PHOTO_JPEG, 128, SEED).numpy())
    assert not np.array_equal(out, pp.imagenet_train(PHOTO_JPEG, 128, SEED + [0, 1]).numpy())
    # Seeds are values: int32, int64 and a Python list with the same numbers agree.
    for seed in (tf.constant(SEED, tf.int32), [int(v) for v in SEED]):
        np.testing.assert_array_equal(pp.imagenet_train(PHOTO_JPEG, 128, seed).numpy(), out)


def test_imagenet_train_flips_about_half_the_time():
    """Red increases left to right in the source, so a flipped crop has it decreasing."""
    h, w, n = 90, 120, 400
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.linspace(0, 255, w).astype(np.uint8)[None]
    seeds = [[i, 21] for i in range(n)]
    red = map_seeds(lambda d, s: pp.imagenet_train(d, 32, s), encode(image, "PNG"), seeds)[..., 0]
    slope = red[:, :, -1].mean(1) - red[:, :, 0].mean(1)
    assert (np.abs(slope) > 1).all()
    assert 0.4 < (slope < 0).mean() < 0.6
    eager = pp.imagenet_train(encode(image, "PNG"), 32, seeds[7]).numpy()[..., 0]
    np.testing.assert_array_equal(eager, red[7])


def test_imagenet_train_color_jitter():
    fn0 = lambda d, s: pp.imagenet_train(d, 96, s)
    fn4 = lambda d, s: pp.imagenet_train(d, 96, s, color_jitter=0.4)
    jittered = both(fn4, PHOTO_JPEG, SEED, static_shape=[96, 96, 3])
    assert jittered.dtype == np.float32 and 0 <= jittered.min() and jittered.max() <= 255
    seeds = [[i, 2] for i in range(12)]
    plain, jittered = map_seeds(fn0, PHOTO_JPEG, seeds), map_seeds(fn4, PHOTO_JPEG, seeds)
    assert jittered.min() >= 0 and jittered.max() <= 255
    # Same crop + flip (sub-seeds), different colour statistics.
    stats = lambda x: np.array([x.mean(), x.std(), (x.max(-1) - x.min(-1)).mean()])
    changed = [np.abs(stats(j) - stats(p)).max() > 2.0 for j, p in zip(jittered, plain)]
    assert sum(changed) >= 10
    # ...while the geometry is unchanged: spatial structure correlates strongly.
    for j, p in zip(jittered, plain):
        assert np.corrcoef(j.mean(-1).ravel(), p.mean(-1).ravel())[0, 1] > 0.9


def test_random_color_jitter_semantics():
    image = PHOTO[:64, :64].astype(np.float32)
    fn = lambda x, s: pp.random_color_jitter(x, 0.4, s)
    out = both(fn, image, SEED)
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 255
    np.testing.assert_array_equal(
        both(lambda x, s: pp.random_color_jitter(x, 0.0, s), image, SEED), image
    )
    # Constant grey: contrast and saturation are no-ops, brightness scales by U[0.6, 1.4].
    grey = np.full((8, 8, 3), 100.0, np.float32)
    seeds = tf.constant([[i, 9] for i in range(300)], tf.int64)
    ds = tf.data.Dataset.from_tensor_slices(seeds).map(lambda s: fn(tf.constant(grey), s))
    outs = next(iter(ds.batch(300))).numpy()
    assert np.allclose(outs, outs[:, :1, :1, :1], atol=1e-3)  # still constant and grey
    factor = outs[:, 0, 0, 0] / 100.0
    assert 0.6 - 1e-4 <= factor.min() < 0.65 and 1.35 < factor.max() <= 1.4 + 1e-4
    # Bright image: brightness > 255 / 240 (p = 0.42) clips, never above 255. (The 601 luma
    # weights sum to 0.9999, so saturation then pulls 255 a hair down, as in torchvision.)
    bright = np.full((8, 8, 3), 240.0, np.float32)
    ds = tf.data.Dataset.from_tensor_slices(seeds).map(lambda s: fn(tf.constant(bright), s))
    outs = next(iter(ds.batch(300))).numpy()
    assert outs.max() <= 255.0 and 0.3 < (outs > 254.9).mean() < 0.55


# ----------------------------------------------------------------------------- ImageNet eval


@pytest.mark.parametrize(
    "h,w,size", [(375, 500, 224), (500, 375, 224), (300, 257, 224), (256, 256, 160)]
)
def test_imagenet_eval_is_center_crop_of_resized(h, w, size):
    image = photo(h, w, seed=h + w)
    data = encode(image, "PNG")
    out = both(lambda d: pp.imagenet_eval(d, size), data, static_shape=[size, size, 3])
    assert out.dtype == np.float32 and out.shape == (size, size, 3)
    (new_h, new_w), (top, left) = torchvision_eval_geometry(h, w, size)
    expected = np_bilinear(image, new_h, new_w)[top : top + size, left : left + size]
    np.testing.assert_allclose(out, expected, atol=2e-3)
    # antialias=True reproduces torchvision's PIL pipeline to within uint8 rounding.
    pil = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
    pil = np.asarray(pil, np.float32)[top : top + size, left : left + size]
    aa = both(lambda d: pp.imagenet_eval(d, size, antialias=True), data)
    assert np.abs(aa - pil).max() <= 1.0


def test_imagenet_eval_geometry_rounds_half_to_even():
    """500x375 -> 341x256: left = round(58.5) = 58 (Python/torchvision), not 59."""
    assert torchvision_eval_geometry(375, 500, 224) == ((256, 341), (16, 58))
    image = photo(375, 500, seed=8)
    out = pp.imagenet_eval(encode(image, "PNG"), 224).numpy()
    resized = np_bilinear(image, 256, 341)
    np.testing.assert_allclose(out, resized[16:240, 58:282], atol=2e-3)
    assert np.abs(out - resized[16:240, 59:283]).max() > 1.0


def test_imagenet_eval_jpeg_and_crop_fraction():
    out = both(lambda d: pp.imagenet_eval(d, 128, crop_fraction=1.0), PHOTO_JPEG)
    decoded = pp.decode_rgb(PHOTO_JPEG).numpy()
    expected = np_bilinear(decoded, 128, 170)[:, 21:149]  # round(42 / 2) = 21
    np.testing.assert_allclose(out, expected, atol=2e-3)


# ------------------------------------------------------------------------------------ CIFAR


def _match_shift(out, image, padding):
    """(dy, dx, flipped) such that out is the padded image shifted (and maybe flipped)."""
    padded = np.pad(image.astype(np.float32), ((padding,) * 2, (padding,) * 2, (0, 0)))
    h, w = image.shape[:2]
    matches = [
        (dy, dx, flip)
        for dy in range(2 * padding + 1)
        for dx in range(2 * padding + 1)
        for flip in (False, True)
        if np.array_equal(
            out,
            padded[dy : dy + h, dx : dx + w][:, ::-1] if flip else padded[dy : dy + h, dx : dx + w],
        )
    ]
    assert len(matches) == 1, matches
    return matches[0]


def test_cifar_train_is_padded_shifted_copy():
    image = np.random.default_rng(0).integers(1, 256, (32, 32, 3), dtype=np.uint8)
    out = both(lambda x, s: pp.cifar_train(x, s), image, SEED, static_shape=[32, 32, 3])
    assert out.dtype == np.float32
    _match_shift(out, image, 4)
    n = 300
    seeds = tf.constant([[i, 13] for i in range(n)], tf.int64)
    ds = tf.data.Dataset.from_tensor_slices(seeds).map(lambda s: pp.cifar_train(image, s))
    outs = next(iter(ds.batch(n))).numpy()
    shifts = [_match_shift(o, image, 4) for o in outs]
    assert len({s[:2] for s in shifts}) >= 65  # most of the 81 offsets show up
    assert {s[0] for s in shifts} == set(range(9)) == {s[1] for s in shifts}
    assert 0.4 < np.mean([s[2] for s in shifts]) < 0.6
    np.testing.assert_array_equal(pp.cifar_train(image, seeds[5]).numpy(), outs[5])


def test_cifar_train_without_flip_never_mirrors():
    image = np.random.default_rng(3).integers(1, 256, (32, 32, 3), dtype=np.uint8)
    seeds = tf.constant([[i, 5] for i in range(100)], tf.int64)
    ds = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: pp.cifar_train(image, s, flip=False))
    shifts = [_match_shift(o, image, 4) for o in next(iter(ds.batch(100))).numpy()]
    assert not any(s[2] for s in shifts)


def test_cifar_train_other_sizes_and_float_input():
    image = np.random.default_rng(1).uniform(1, 255, (24, 40, 3)).astype(np.float32)
    out = both(lambda x, s: pp.cifar_train(x, s, padding=2), image, SEED, static_shape=[24, 40, 3])
    _match_shift(out, image, 2)
    same = both(lambda x, s: pp.cifar_train(x, s, padding=0), image, SEED)
    assert np.array_equal(same, image) or np.array_equal(same, image[:, ::-1])


def test_cifar_eval():
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = both(pp.cifar_eval, image, static_shape=[32, 32, 3])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image.astype(np.float32))


# ----------------------------------------------------------------------------------- resize


def test_resize_single_and_batch():
    image = PHOTO[:60, :80]
    out = both(lambda x: pp.resize(x, 48), image, static_shape=[48, 48, 3])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np_bilinear(image, 48, 48), atol=2e-3)
    batch = np.stack([image, image[::-1]]).astype(np.float32)
    out = both(lambda x: pp.resize(x, 100), batch, static_shape=[2, 100, 100, 3])
    np.testing.assert_allclose(out[1], np_bilinear(image[::-1], 100, 100), atol=2e-3)
    assert pp.resize(tf.constant(batch, tf.float16), 8).dtype == tf.float32
