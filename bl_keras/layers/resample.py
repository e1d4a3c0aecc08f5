"""Resampling used where Big-Little branches meet.

The official Big-Little Net code merges branches with
`F.interpolate(big, size=little.shape[2:])` (mode "nearest"), whose index rule is
`src = min(floor(dst * (in / out)), in - 1)` computed in float32, with exact shortcuts for
`out == in` and `out == 2 * in`. `resize_nearest` reproduces that rule for any pair of sizes,
including the odd ones (13 -> 25) that inputs which are not multiples of 32 produce.

`upsample_add` is the merge itself. When the sizes are known and exactly double, it adds the
small map to the large one by broadcasting over a (h, 2, w, 2) view instead of materialising
the upsampled tensor: the same numbers, one fused elementwise op instead of two gathers and an
add (the profile of a batch-1 forward pass showed the materialised upsample costing more than
its share). ONNX Runtime is the other way round: it runs a `Resize` in its blocked layout and
the broadcast view out of it, so exports to ONNX trace the merges inside `resize_merges()`,
which makes `upsample_add` (and `upsample_to`) resize at an exact 2x (the same numbers: for an
exact doubling the half-pixel nearest rule of the resize picks source `i // 2`, as PyTorch
does).
"""

import contextlib
import contextvars

from keras import ops

_RESIZE_MERGES = contextvars.ContextVar("bl_keras_resize_merges", default=False)


@contextlib.contextmanager
def resize_merges():
    """Within this context, merges traced by `upsample_add` at an exact 2x use one nearest
    resize op and an add instead of the broadcast over a (h, 2, w, 2) view. For exports to
    runtimes that fuse resizes into their own layout (ONNX Runtime); trace the model inside it.
    """
    token = _RESIZE_MERGES.set(True)
    try:
        yield
    finally:
        _RESIZE_MERGES.reset(token)


UPSAMPLE_MODES = ("nearest", "bilinear")


def _nearest_indices(in_size, out_size):
    """PyTorch's legacy nearest source index for each output position (float32 arithmetic)."""
    scale = ops.cast(in_size, "float32") / ops.cast(out_size, "float32")
    idx = ops.floor(ops.cast(ops.arange(out_size), "float32") * scale)
    return ops.minimum(ops.cast(idx, "int32"), in_size - 1)


def _static_hw(x):
    h, w = x.shape[1], x.shape[2]
    return (h, w) if h is not None and w is not None else None


def _dynamic_hw(x):
    static = _static_hw(x)
    if static is not None:
        return static
    shape = ops.shape(x)
    return shape[1], shape[2]


def resize_nearest(x, size):
    """Nearest-neighbour resize of NHWC `x` to `size` with PyTorch's index convention."""
    in_h, in_w = _dynamic_hw(x)
    out_h, out_w = size
    x = ops.take(x, _nearest_indices(in_h, out_h), axis=1)
    return ops.take(x, _nearest_indices(in_w, out_w), axis=2)


def resize_bilinear(x, size):
    """Bilinear resize with half-pixel centres (PyTorch `align_corners=False`)."""
    return ops.image.resize(x, size, interpolation="bilinear", antialias=False)


def upsample_add(small, large, mode="nearest"):
    """`large + resize(small, size_of(large))`, the Big-Little merge by addition."""
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {mode!r}")
    small_hw, large_hw = _static_hw(small), _static_hw(large)
    if small_hw is not None and small_hw == large_hw:
        return large + small
    if mode == "bilinear":
        return large + resize_bilinear(small, _dynamic_hw(large))
    if small_hw is not None and large_hw == (2 * small_hw[0], 2 * small_hw[1]):
        if _RESIZE_MERGES.get():
            return large + ops.image.resize(small, large_hw, interpolation="nearest",
                                            antialias=False)
        h, w = small_hw
        channels = large.shape[-1]
        grid = ops.reshape(large, (-1, h, 2, w, 2, channels))
        grid = grid + ops.reshape(small, (-1, h, 1, w, 1, channels))
        return ops.reshape(grid, (-1, 2 * h, 2 * w, channels))
    return large + resize_nearest(small, _dynamic_hw(large))


def upsample_to(small, large, mode="nearest"):
    """`resize(small, size_of(large))`, for merges that concatenate instead of add."""
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {mode!r}")
    if _static_hw(small) is not None and _static_hw(small) == _static_hw(large):
        return small
    size = _dynamic_hw(large)
    if mode == "bilinear":
        return resize_bilinear(small, size)
    small_hw = _static_hw(small)
    if (_RESIZE_MERGES.get() and small_hw is not None
            and _static_hw(large) == (2 * small_hw[0], 2 * small_hw[1])):
        return ops.image.resize(small, size, interpolation="nearest", antialias=False)
    return resize_nearest(small, size)


__all__ = ["UPSAMPLE_MODES", "resize_nearest", "resize_bilinear", "resize_merges", "upsample_add",
           "upsample_to"]
