"""Multi-resolution convolution (seed 002, "Convolutional Neural Networks without Pooling or
Fixed Filter Sizes"): one conv block applied at several resolutions of its input, mixed by
learned softmax weights (eq. 4-5, Fig. 2), and the learned-depth mix of section 3.3 (eq. 6).

How the paper was read (its author code, mehravehj/multiresolution, does not run; the facts it
shows are in `../shared/reference/README.md`):

- Level r (r = 0..R-1; the paper's "r = 1..R, U_{2r}") is the input max-pooled 2x2/2 r times.
  Pooling 2x2/2 r times equals one 2^r x 2^r / 2^r pool (floor(floor(H/2)/2) = floor(H/4), and
  the windows nest), so each active level is pooled once from the nearest active level below
  it: a level that is not active costs nothing.
- Block B, `block="conv"`: 3x3 conv (stride 1, "same", no bias), ReLU, BatchNorm without scale
  or offset; the conv's filters are shared by every level, each level has its own BN (its
  statistics differ per scale). `block="mbconv"`: EfficientNet's MBConv6 (1x1 expansion to 6x
  the input channels, 3x3 depthwise, squeeze-excite to a quarter of the input channels, 1x1
  projection, identity skip when the widths agree), each conv followed by a BN without scale or
  offset and, but for the projection, the activation (swish, as EfficientNet); one set of BNs per
  level. With 128 channels that is 253,472 parameters per layer, which makes Table 4's Eff-Conv
  1,535,808 (1.5M).
- Each level's output is upsampled back to the input's exact size (nearest with PyTorch's index
  rule, or bilinear with half-pixel centres), weighted by softmax(mixing logits) and summed.
  When the size is an exact multiple of 2^r the nearest upsample is a broadcast over a
  (h, 2^r, w, 2^r) view, never a materialised gather.
- The mixing logits start equal (zeros). `mixing="uniform"` keeps them fixed (the scale-invariant
  baseline of Table 1). They are architecture weights: `layer.architecture_weights` lists them
  apart from the network weights, for the alternating search of section 3.4.
"""

import keras
from keras import layers, ops

from bl_keras.layers.blocks import BN_EPSILON, BN_MOMENTUM, check_positive_int, conv_init
from bl_keras.layers.resample import resize_bilinear, resize_nearest

BLOCKS = ("conv", "mbconv")
POOLS = ("max", "avg")
UPSAMPLES = ("nearest", "bilinear")
MIXINGS = ("learned", "uniform")


def _static_hw(shape):
    h, w = shape[1], shape[2]
    return (h, w) if h is not None and w is not None else None


def _spatial(x):
    static = _static_hw(x.shape)
    if static is not None:
        return static
    shape = ops.shape(x)
    return shape[1], shape[2]


def upsample_to_size(x, size, factor, mode="nearest"):
    """Resizes NHWC `x` (the input pooled by `factor`) to `size` = (H, W), the input's size.

    Nearest with exact multiples is a broadcast over a (h, factor, w, factor) view; other sizes
    use PyTorch's nearest index rule, or bilinear with half-pixel centres."""
    if factor == 1:
        return x
    if mode == "bilinear":
        return resize_bilinear(x, size)
    small, (out_h, out_w) = _static_hw(x.shape), size
    if (small is not None and isinstance(out_h, int) and isinstance(out_w, int)
            and (out_h, out_w) == (small[0] * factor, small[1] * factor)):
        h, w = small
        channels = x.shape[-1]
        grid = ops.reshape(x, (-1, h, 1, w, 1, channels))
        grid = ops.broadcast_to(grid, (ops.shape(x)[0], h, factor, w, factor, channels))
        return ops.reshape(grid, (-1, out_h, out_w, channels))
    return resize_nearest(x, size)


def _add_upsampled(total, small, factor, mode):
    """`total + upsample(small)` without materialising the upsample for exact nearest sizes."""
    if factor == 1:
        return total + small
    small_hw, large_hw = _static_hw(small.shape), _static_hw(total.shape)
    if (mode == "nearest" and small_hw is not None and large_hw is not None
            and large_hw == (small_hw[0] * factor, small_hw[1] * factor)):
        h, w = small_hw
        channels = total.shape[-1]
        grid = ops.reshape(total, (-1, h, factor, w, factor, channels))
        grid = grid + ops.reshape(small, (-1, h, 1, w, 1, channels))
        return ops.reshape(grid, (-1, *large_hw, channels))
    return total + upsample_to_size(small, _spatial(total), factor, mode)


def _normalize_active(active, levels):
    if active is None:
        return tuple(range(levels))
    try:
        kept = tuple(sorted(int(r) for r in active))
    except (TypeError, ValueError) as err:
        raise ValueError(f"active must be a list of level indices, got {active!r}") from err
    if not kept or len(set(kept)) != len(kept) or kept[0] < 0 or kept[-1] >= levels:
        raise ValueError(f"active must be distinct levels in [0, {levels}) and not empty, got "
                         f"{active!r}")
    return kept


def _bn(name, dtype):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, center=False,
                                     scale=False, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="bl_keras")
class MultiResConv(layers.Layer):
    """One multi-resolution convolutional layer (eq. 4, Fig. 2 of seed 002).

    `y = sum_r softmax(logits)_r * U_r(B(S_r(x)))` over the active levels r: S_r pools the input
    2x2/2 r times, B is one conv block whose filters every level shares, U_r resizes back to the
    input's exact size. Odd sizes work: pooling floors, upsampling targets the input size.

    Args:
        filters: output channels.
        levels: R, the number of resolutions (level r is the input pooled r times); 4 at 32x32.
        block: "conv" (3x3 conv without bias, ReLU, BN without scale/offset) or "mbconv"
            (MBConv6 with squeeze-excite, Table 4's Eff-Conv).
        pool: "max" (default, the paper's) or "avg".
        upsample: "nearest" (default, the author code's) or "bilinear".
        mixing: "learned" (trainable logits) or "uniform" (fixed equal weights: the scale-
            invariant baseline).
        active: the levels computed (default all). A level that is not active has no pool, conv,
            BN or upsample; the kept levels' logits are the layer's `mixing_logits` (the softmax
            renormalises over them). Pruned models are built from this.
        kernel_size: the spatial size of the block's (depthwise) conv.
        activation: the block's activation (default "relu" for "conv", "swish" for "mbconv").
        expansion: MBConv expansion ratio (6).
        se_ratio: MBConv squeeze-excite width as a fraction of the input channels (0.25; 0: none).
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> layer = MultiResConv(64, levels=4)
        >>> layer(keras.ops.ones((2, 32, 32, 3))).shape
        (2, 32, 32, 64)
        >>> [w.name for w in layer.architecture_weights]
        ['mixing_logits']
    """

    def __init__(self, filters, levels=4, block="conv", pool="max", upsample="nearest",
                 mixing="learned", active=None, kernel_size=3, activation=None, expansion=6,
                 se_ratio=0.25, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("filters", filters)
        check_positive_int("levels", levels)
        check_positive_int("kernel_size", kernel_size)
        check_positive_int("expansion", expansion)
        for arg, value, allowed in (("block", block, BLOCKS), ("pool", pool, POOLS),
                                    ("upsample", upsample, UPSAMPLES),
                                    ("mixing", mixing, MIXINGS)):
            if value not in allowed:
                raise ValueError(f"{arg} must be one of {allowed}, got {value!r}")
        if not 0 <= se_ratio < 1 or isinstance(se_ratio, bool):
            raise ValueError(f"se_ratio must be in [0, 1), got {se_ratio!r}")
        self.filters = filters
        self.levels = levels
        self.block = block
        self.pool = pool
        self.upsample = upsample
        self.mixing = mixing
        self.active = _normalize_active(active, levels)
        self.kernel_size = kernel_size
        self.activation = activation
        self.expansion = expansion
        self.se_ratio = se_ratio
        self._activation = keras.activations.get(
            activation or ("relu" if block == "conv" else "swish"))

    @property
    def min_size(self):
        """The smallest input height and width: the deepest active level must keep one pixel."""
        return 2 ** self.active[-1]

    def _check_size(self, shape):
        for dim in shape[1:3]:
            if dim is not None and dim < self.min_size:
                raise ValueError(
                    f"MultiResConv {self.name!r} with levels={self.levels} (active "
                    f"{list(self.active)}) needs inputs of at least {self.min_size}x"
                    f"{self.min_size} (level {self.active[-1]} is the input pooled "
                    f"{self.active[-1]} times), got {shape[1]}x{shape[2]}")

    def build(self, input_shape):
        self._check_size(input_shape)
        channels = input_shape[-1]
        policy = self.dtype_policy
        k = self.kernel_size
        if self.block == "conv":
            self.conv = layers.Conv2D(self.filters, k, padding="same", use_bias=False,
                                      kernel_initializer=conv_init(), name="conv",
                                      dtype=policy)
            self.conv.build(input_shape)
            self.bns = {r: [_bn(f"bn{r}", policy)] for r in self.active}
            out_shapes = [(*input_shape[:3], self.filters)]
        else:
            expanded = channels * self.expansion
            self.expand = None
            out_shapes = []
            shape = tuple(input_shape)
            if self.expansion != 1:
                self.expand = layers.Conv2D(expanded, 1, use_bias=False, name="expand",
                                            kernel_initializer=conv_init(), dtype=policy)
                self.expand.build(shape)
                shape = (*shape[:3], expanded)
                out_shapes.append(shape)
            self.depthwise = layers.DepthwiseConv2D(k, padding="same", use_bias=False,
                                                    depthwise_initializer=conv_init(),
                                                    name="depthwise", dtype=policy)
            self.depthwise.build(shape)
            out_shapes.append(shape)
            self.se_reduce = self.se_expand = None
            squeezed = max(1, int(channels * self.se_ratio)) if self.se_ratio else 0
            if squeezed:
                self.se_reduce = layers.Dense(squeezed, activation=self._activation,
                                              name="se_reduce", dtype=policy)
                self.se_expand = layers.Dense(expanded, activation="sigmoid",
                                              name="se_expand", dtype=policy)
                self.se_reduce.build((shape[0], expanded))
                self.se_expand.build((shape[0], squeezed))
            self.project = layers.Conv2D(self.filters, 1, use_bias=False, name="project",
                                         kernel_initializer=conv_init(), dtype=policy)
            self.project.build(shape)
            out_shapes.append((*shape[:3], self.filters))
            names = (["expand_bn"] if self.expand is not None else []) + ["depthwise_bn",
                                                                           "project_bn"]
            self.bns = {r: [_bn(f"{n}{r}", policy) for n in names] for r in self.active}
        for bns in self.bns.values():
            for bn, shape in zip(bns, out_shapes):
                bn.build(shape)
        self.residual = self.block == "mbconv" and channels == self.filters
        # A lone active level has nothing to mix (its weight is 1): its logit is not trained.
        self.mixing_logits = self.add_weight(
            shape=(len(self.active),), initializer="zeros",
            trainable=self._learns_mixing, name="mixing_logits")

    @property
    def _learns_mixing(self):
        return self.mixing == "learned" and len(self.active) > 1

    @property
    def architecture_weights(self):
        """The trainable mixing logits (empty for `mixing="uniform"`, a single active level or
        before build)."""
        if not self.built or not self._learns_mixing:
            return []
        return [self.mixing_logits]

    def mixing_weights(self):
        """softmax(mixing logits) over the active levels, as a float32 tensor."""
        if len(self.active) == 1:
            return ops.ones((1,), "float32")
        return ops.softmax(ops.cast(self.mixing_logits, "float32"))

    def _block(self, x, bns, training):
        if self.block == "conv":
            return bns[0](self._activation(self.conv(x)), training=training)
        y, bns = x, list(bns)
        if self.expand is not None:
            y = self._activation(bns.pop(0)(self.expand(y), training=training))
        y = self._activation(bns.pop(0)(self.depthwise(y), training=training))
        if self.se_reduce is not None:
            scale = self.se_expand(self.se_reduce(ops.mean(y, axis=(1, 2))))
            y = y * ops.cast(scale, y.dtype)[:, None, None, :]
        y = bns.pop(0)(self.project(y), training=training)
        return x + y if self.residual else y

    def _pool(self, x, factor):
        if factor == 1:
            return x
        pool = ops.max_pool if self.pool == "max" else ops.average_pool
        return pool(x, pool_size=factor, strides=factor, padding="valid")

    def call(self, x, training=None):
        self._check_size(x.shape)
        size = _spatial(x)
        single = len(self.active) == 1
        weights = None if single else ops.cast(self.mixing_weights(), self.compute_dtype)
        total, pooled, pooled_level = None, x, 0
        heights = {}
        for i, r in enumerate(self.active):
            pooled = self._pool(pooled, 2 ** (r - pooled_level))
            pooled_level = r
            heights[r] = pooled.shape[1]
            y = self._block(pooled, self.bns[r], training)
            if not single:
                y = y * weights[i]
            if total is None:
                total = upsample_to_size(y, size, 2**r, self.upsample)
            else:
                total = _add_upsampled(total, y, 2**r, self.upsample)
        # The height each level ran at in the last call (for `bl_keras.multires.level_macs`).
        self._level_heights = heights
        return total

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:3], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "levels": self.levels,
            "block": self.block,
            "pool": self.pool,
            "upsample": self.upsample,
            "mixing": self.mixing,
            "active": list(self.active),
            "kernel_size": self.kernel_size,
            "activation": self.activation,
            "expansion": self.expansion,
            "se_ratio": self.se_ratio,
        }


@keras.saving.register_keras_serializable(package="bl_keras")
class DepthMix(layers.Layer):
    """The learned depth of section 3.3 (eq. 6): `sum_l softmax(beta)_l * h_l` over the outputs
    of layers 2..L-1, which feeds the last layer. beta starts equal and is an architecture
    weight, trained with the mixing logits on D_b.

    Args:
        mixing: "learned" (trainable beta) or "uniform" (fixed equal weights).
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> mix = DepthMix()
        >>> mix([keras.ops.ones((1, 8, 8, 4)), keras.ops.zeros((1, 8, 8, 4))]).shape
        (1, 8, 8, 4)
    """

    def __init__(self, mixing="learned", **kwargs):
        super().__init__(**kwargs)
        if mixing not in MIXINGS:
            raise ValueError(f"mixing must be one of {MIXINGS}, got {mixing!r}")
        self.mixing = mixing

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or not input_shape or not isinstance(
                input_shape[0], (list, tuple)):
            raise ValueError(f"DepthMix takes a list of tensors, got shape {input_shape!r}")
        first = tuple(input_shape[0])[1:]
        for shape in input_shape[1:]:
            if tuple(shape)[1:] != first:
                raise ValueError(f"DepthMix inputs must have one shape, got "
                                 f"{[tuple(s) for s in input_shape]}")
        self.beta_logits = self.add_weight(shape=(len(input_shape),), initializer="zeros",
                                           trainable=self.mixing == "learned",
                                           name="beta_logits")

    @property
    def architecture_weights(self):
        if not self.built or self.mixing != "learned":
            return []
        return [self.beta_logits]

    def mixing_weights(self):
        """softmax(beta) as a float32 tensor, one weight per input."""
        return ops.softmax(ops.cast(self.beta_logits, "float32"))

    def call(self, inputs):
        weights = ops.cast(self.mixing_weights(), self.compute_dtype)
        total = inputs[0] * weights[0]
        for i, x in enumerate(inputs[1:], start=1):
            total = total + x * weights[i]
        return total

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "mixing": self.mixing}


def architecture_weights(model):
    """The architecture weights of any model or layer (mixing logits, beta), in layer order:
    the variables of every sublayer's `architecture_weights`. Empty for ordinary models."""
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for weight in getattr(layer, "architecture_weights", ()):
            if id(weight) not in seen:
                seen.add(id(weight))
                found.append(weight)
    return found


def network_weights(model):
    """The trainable weights that are not architecture weights (the conv filters, etc.)."""
    arch = {id(w) for w in architecture_weights(model)}
    return [w for w in model.trainable_weights if id(w) not in arch]


__all__ = ["BLOCKS", "MIXINGS", "POOLS", "UPSAMPLES", "DepthMix", "MultiResConv",
           "architecture_weights", "network_weights", "upsample_to_size"]
