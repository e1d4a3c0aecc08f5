"""Slimmable layers of the universally slimmable networks (US-Nets, Yu & Huang 2019) that
MutualNet (seed 003) trains: one set of weights, built at the largest width, run at any width.

At width w a layer uses the first channels of every tensor, `kernel[..., :c_in, :c_out]`, with
the official channel rule (`slim_channels`): `int(make_divisible(c * w / ratio) * ratio)`.
Only the layers that *produce* channels need the rule (`SlimmableConv2D`, `SlimmableDense`);
`SlimmableDepthwiseConv2D` and `SlimmableBatchNormalization` take as many channels as their
input has, so a network is slimmed consistently by construction.

The width is Python state set by `bl_keras.slimmable.set_width`: a graph traced at a width is
specialised to it (static shapes, so XLA and the JAX backend run it), and `set_width` drops the
model's compiled functions. Inside `bl_keras.slimmable.using_width(model, tensor)` the width
is a scalar tensor instead: on the TensorFlow backend without XLA one traced graph then runs
every width (dynamic channel counts), which the MutualNet step uses to sample widths freely.

BatchNormalization follows the official code: one full-size gamma/beta shared by every width
and resolution, batch statistics whenever training, no running averages during training, and
"post-statistics" computed per (width, resolution) after training
(`bl_keras.slimmable.calibrate_batch_norm`). Those statistics are saved with the layer
(`.keras`, `.weights.h5`); inference at a width that was never calibrated raises.
"""

import math

import keras
import numpy as np
from keras import ops
from keras.src.backend.common.symbolic_scope import in_symbolic_scope
from keras.src.ops.operation_utils import compute_conv_output_shape

BN_EPSILON = 1e-5
DEFAULT_DIVISOR = 8


def make_divisible(v, divisor=DEFAULT_DIVISOR, min_value=1):
    """The channel rounding of the official code (from TF-slim's MobileNet): the multiple of
    `divisor` nearest to `v` (halves up), at least `min_value`, plus one `divisor` where that
    rounds down by more than 10%."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def slim_channels(channels, width, ratio=1, divisor=DEFAULT_DIVISOR):
    """Channels of a `channels`-wide tensor (its count at width 1.0) at `width`:
    `int(make_divisible(channels * width / ratio, divisor) * ratio)`, in Python floats as the
    official code. `ratio` is MobileNetV2's expansion factor t for the expanded tensors (their
    count is t times a rounded count: 24 channels at 0.45 expand to 96, not 64)."""
    return int(make_divisible(channels * width / ratio, divisor) * ratio)


def _slim_channels_tensor(channels, width, ratio, divisor):
    """`slim_channels` of a scalar width tensor, in float64 as Python's floats."""
    v = ops.cast(width, "float64") * channels / ratio
    rounded = ops.floor(ops.floor(v + divisor / 2) / divisor) * divisor
    rounded = ops.maximum(rounded, 1.0)
    rounded = ops.where(rounded < 0.9 * v, rounded + divisor, rounded)
    return ops.cast(rounded * ratio, "int32")


def _is_tensor_width(width):
    return not isinstance(width, (int, float, np.floating, np.integer))


def _check_width_range(width_range):
    try:
        low, high = (float(w) for w in width_range)
    except (TypeError, ValueError):
        raise ValueError(f"width_range must be (min, max), got {width_range!r}") from None
    if not 0 < low <= high:
        raise ValueError(f"width_range must be (min, max) with 0 < min <= max, got "
                         f"{width_range!r}")
    return low, high


def _check_ratio(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class SlimmableLayer(keras.layers.Layer):
    """What every slimmable layer shares: the model's `width_range`, the current `width` (the
    largest until `set_width` changes it) and the scoped tensor width of `using_width`."""

    def __init__(self, width_range=(1.0, 1.0), divisor=DEFAULT_DIVISOR, **kwargs):
        super().__init__(**kwargs)
        self.width_range = _check_width_range(width_range)
        self.divisor = _check_ratio("divisor", divisor)
        self.width = self.width_range[1]
        self._scoped_width = None

    @property
    def max_width(self):
        return self.width_range[1]

    def active_width(self):
        """The scoped tensor width inside `using_width`, else the Python `width`."""
        return self.width if self._scoped_width is None else self._scoped_width

    def check_width(self, width):
        """Raises a ValueError naming the layer when `width` cannot run it."""

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store["width"] = np.array(self.width, "float64")

    def load_own_variables(self, store):
        # Keras' own check would refuse the extra entries (the width, BN calibrations).
        for i, variable in enumerate(self._trainable_variables + self._non_trainable_variables):
            variable.assign(store[f"{i}"])
        if "width" in set(store.keys()):
            self.width = float(np.asarray(store["width"]))

    def get_config(self):
        return {**super().get_config(), "width_range": list(self.width_range),
                "divisor": self.divisor}


class _ChannelProducer(SlimmableLayer):
    """A layer whose output channels follow the width rule (`slim_out`) or stay full."""

    def __init__(self, units, slim_in=True, slim_out=True, ratio=(1, 1), **kwargs):
        super().__init__(**kwargs)
        if isinstance(ratio, (int, np.integer)):
            ratio = (ratio, ratio)
        if len(ratio) != 2:
            raise ValueError(f"ratio must be (input, output) factors, got {ratio!r}")
        self.ratio = tuple(_check_ratio("ratio", r) for r in ratio)
        self.units_basic = _check_ratio("filters/units", units)
        self.slim_in = bool(slim_in)
        self.slim_out = bool(slim_out)
        self.full_out = self.out_channels(self.max_width)

    def out_channels(self, width):
        """Output channels at `width` (a Python int; a tensor for a tensor width)."""
        if not self.slim_out:
            return self.units_basic
        if _is_tensor_width(width):
            return _slim_channels_tensor(self.units_basic, width, self.ratio[1], self.divisor)
        return slim_channels(self.units_basic, width, self.ratio[1], self.divisor)

    def check_width(self, width):
        out = self.out_channels(width)
        if out > self.full_out:
            raise ValueError(
                f"layer {self.name!r}: width {width} rounds its {self.units_basic} channels "
                f"to {out} (divisor {self.divisor}), above its full width {self.full_out}; use "
                "a smaller divisor or a larger minimum width")

    def _in_channels(self, inputs, full_in):
        channels = inputs.shape[-1]
        if channels is None:
            return ops.shape(inputs)[-1]
        if channels > full_in:
            raise ValueError(f"layer {self.name!r} was built for {full_in} input channels, "
                             f"got {channels}")
        if not self.slim_in and channels != full_in:
            raise ValueError(f"layer {self.name!r} does not slim its input ({full_in} "
                             f"channels), got {channels}")
        return channels

    def _out_for_call(self):
        width = self.active_width()
        if not _is_tensor_width(width):
            self.check_width(width)
        return self.out_channels(width)

    def get_config(self):
        return {**super().get_config(), "slim_in": self.slim_in, "slim_out": self.slim_out,
                "ratio": list(self.ratio)}


def _conv_kernel_initializer(kernel_size, out_channels):
    # PyTorch's normal(0, sqrt(2 / (k * k * out_channels))) of the official reset_parameters.
    return keras.initializers.RandomNormal(
        stddev=math.sqrt(2.0 / (kernel_size[0] * kernel_size[1] * out_channels)))


def _pair(value, name):
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"{name} must be a positive int or a pair, got {value!r}")
    return value


def _check_padding(padding):
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    return padding


@keras.saving.register_keras_serializable(package="bl_keras")
class SlimmableConv2D(_ChannelProducer):
    """A 2-D convolution (groups 1) that runs at any width of its `width_range`.

    Args:
        filters: output channels at width 1.0 (the built kernel has
            `slim_channels(filters, max_width, ratio[1], divisor)`).
        kernel_size, strides, padding ("valid"/"same"), dilation_rate, use_bias: as Conv2D.
        slim_in: False for a layer whose input is never slimmed (the stem's RGB).
        slim_out: False for a layer whose outputs are never slimmed (MobileNetV2's 1280-wide
            tail conv).
        ratio: (input, output) factors of the channel rule (MobileNetV2: expand (1, t),
            project (t, 1)). The input side follows the input tensor; it is kept for the
            record and for `subnetwork`.
        divisor: channel counts are multiples of it (8 for the official US-MobileNets).
        width_range: (min, max) widths of the network; the layer is built at max.
        kernel_initializer: default normal(0, sqrt(2 / (k * k * out))) (the official init).
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 use_bias=False, slim_in=True, slim_out=True, ratio=(1, 1),
                 kernel_initializer=None, bias_initializer="zeros", **kwargs):
        super().__init__(filters, slim_in=slim_in, slim_out=slim_out, ratio=ratio, **kwargs)
        self.filters = self.units_basic
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.padding = _check_padding(padding)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or _conv_kernel_initializer(self.kernel_size, self.full_out))
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        self.full_in = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", initializer=self.kernel_initializer,
                                      shape=(*self.kernel_size, self.full_in, self.full_out))
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.full_out,),
                                        initializer=self.bias_initializer)

    def call(self, inputs):
        cin = self._in_channels(inputs, self.full_in)
        cout = self._out_for_call()
        kernel = self.kernel[:, :, :cin, :cout]
        y = ops.conv(inputs, ops.cast(kernel, self.compute_dtype), strides=self.strides,
                     padding=self.padding, dilation_rate=self.dilation_rate)
        if self.use_bias:
            y = y + ops.cast(self.bias[:cout], self.compute_dtype)
        return y

    def compute_output_shape(self, input_shape):
        width = self.active_width()
        filters = None if _is_tensor_width(width) else self.out_channels(width)
        return compute_conv_output_shape(input_shape, filters, self.kernel_size,
                                         strides=self.strides, padding=self.padding,
                                         dilation_rate=self.dilation_rate)

    def count_macs(self, input_shape, output_shape):
        """k * k * C_in * C_out * H_out * W_out at the width the layer ran at."""
        kh, kw = self.kernel_size
        return kh * kw * input_shape[-1] * int(np.prod(output_shape[1:]))

    def plain_layer(self, width):
        """The ordinary `keras.layers.Conv2D` this layer is at `width` (for `subnetwork`)."""
        return keras.layers.Conv2D(
            self.out_channels(width), self.kernel_size, strides=self.strides,
            padding=self.padding, dilation_rate=self.dilation_rate, use_bias=self.use_bias,
            name=self.name, dtype=self.dtype_policy)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding, "dilation_rate": list(self.dilation_rate),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}


@keras.saving.register_keras_serializable(package="bl_keras")
class SlimmableDense(_ChannelProducer):
    """A dense layer over the first channels of its input, with `units` outputs at width 1.0
    (`slim_out=False` for the classifier: its `units` classes are never slimmed).

    Args:
        units: outputs at width 1.0 (or always, with `slim_out=False`).
        activation, use_bias: as Dense.
        slim_in, slim_out, divisor, width_range: as `SlimmableConv2D`.
        kernel_initializer: default normal(0, 0.01) (the official init); bias zeros.
    """

    def __init__(self, units, activation=None, use_bias=True, slim_in=True, slim_out=False,
                 kernel_initializer=None, bias_initializer="zeros", **kwargs):
        kwargs.pop("ratio", None)
        super().__init__(units, slim_in=slim_in, slim_out=slim_out, ratio=(1, 1), **kwargs)
        self.units = self.units_basic
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(stddev=0.01))
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        self.full_in = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(self.full_in, self.full_out),
                                      initializer=self.kernel_initializer)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.full_out,),
                                        initializer=self.bias_initializer)

    def call(self, inputs):
        cin = self._in_channels(inputs, self.full_in)
        cout = self._out_for_call()
        y = ops.matmul(inputs, ops.cast(self.kernel[:cin, :cout], self.compute_dtype))
        if self.use_bias:
            y = y + ops.cast(self.bias[:cout], self.compute_dtype)
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        width = self.active_width()
        return (*input_shape[:-1], None if _is_tensor_width(width) else self.out_channels(width))

    def count_macs(self, input_shape, output_shape):
        return input_shape[-1] * output_shape[-1] * int(np.prod(output_shape[1:-1]))

    def plain_layer(self, width):
        return keras.layers.Dense(self.out_channels(width), activation=self.activation,
                                  use_bias=self.use_bias, name=self.name,
                                  dtype=self.dtype_policy)

    def get_config(self):
        config = {**super().get_config(), "units": self.units,
                  "activation": keras.activations.serialize(self.activation),
                  "use_bias": self.use_bias,
                  "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                  "bias_initializer": keras.initializers.serialize(self.bias_initializer)}
        config.pop("ratio")
        return config


@keras.saving.register_keras_serializable(package="bl_keras")
class SlimmableDepthwiseConv2D(SlimmableLayer):
    """A depthwise convolution (multiplier 1) over as many channels as its input has (groups =
    the active channels, as the official `USConv2d(depthwise=True)`).

    Args:
        kernel_size, strides, padding ("valid"/"same"), dilation_rate, use_bias: as
            DepthwiseConv2D.
        divisor, width_range: as `SlimmableConv2D` (the channel count comes from the input).
        depthwise_initializer: default normal(0, sqrt(2 / (k * k * channels))) (the official
            init, with PyTorch's out_channels = channels).
    """

    def __init__(self, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 use_bias=False, depthwise_initializer=None, bias_initializer="zeros",
                 **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.padding = _check_padding(padding)
        self.use_bias = bool(use_bias)
        self.depthwise_initializer = (None if depthwise_initializer is None
                                      else keras.initializers.get(depthwise_initializer))
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        self.full_in = int(input_shape[-1])
        initializer = self.depthwise_initializer or _conv_kernel_initializer(
            self.kernel_size, self.full_in)
        self.kernel = self.add_weight(name="kernel", initializer=initializer,
                                      shape=(*self.kernel_size, self.full_in, 1))
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.full_in,),
                                        initializer=self.bias_initializer)

    def call(self, inputs):
        channels = inputs.shape[-1]
        if channels is None:
            channels = ops.shape(inputs)[-1]
        elif channels > self.full_in:
            raise ValueError(f"layer {self.name!r} was built for {self.full_in} channels, "
                             f"got {channels}")
        kernel = self.kernel[:, :, :channels, :]
        y = ops.depthwise_conv(inputs, ops.cast(kernel, self.compute_dtype),
                               strides=self.strides, padding=self.padding,
                               dilation_rate=self.dilation_rate)
        if self.use_bias:
            y = y + ops.cast(self.bias[:channels], self.compute_dtype)
        return y

    def compute_output_shape(self, input_shape):
        return compute_conv_output_shape(input_shape, input_shape[-1], self.kernel_size,
                                         strides=self.strides, padding=self.padding,
                                         dilation_rate=self.dilation_rate)

    def count_macs(self, input_shape, output_shape):
        kh, kw = self.kernel_size
        return kh * kw * int(np.prod(output_shape[1:]))

    def plain_layer(self, width):
        return keras.layers.DepthwiseConv2D(
            self.kernel_size, strides=self.strides, padding=self.padding,
            dilation_rate=self.dilation_rate, use_bias=self.use_bias, name=self.name,
            dtype=self.dtype_policy)

    def get_config(self):
        initializer = self.depthwise_initializer
        return {**super().get_config(), "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "dilation_rate": list(self.dilation_rate), "use_bias": self.use_bias,
                "depthwise_initializer": (None if initializer is None
                                          else keras.initializers.serialize(initializer)),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}


def statistics_key(width, resolution):
    """The key of one calibration: the width rounded to 6 decimals and the (height, width) of
    the images it was computed at (None where unknown)."""
    return (round(float(width), 6), None if resolution is None else tuple(resolution))


def describe_key(key):
    width, resolution = key
    return f"{width:g}" if resolution is None else f"{width:g} at {resolution[0]}x{resolution[1]}"


@keras.saving.register_keras_serializable(package="bl_keras")
class SlimmableBatchNormalization(SlimmableLayer):
    """BatchNormalization over as many channels as its input has, with one full-size
    gamma/beta shared by every width and resolution (the official `USBatchNorm2d`).

    Training (`training=True`) always normalises with the batch's statistics and keeps no
    running averages. Inference uses the post-statistics that
    `bl_keras.slimmable.calibrate_batch_norm` computed for the current width (and resolution);
    without them it raises. `statistics` maps each calibrated (width, (height, width)) to its
    (mean, variance) arrays; they are saved with the weights. `moving_mean` and
    `moving_variance` hold the active calibration.

    Args:
        epsilon: 1e-5 (PyTorch's).
        width_range: as `SlimmableConv2D`.
        gamma_initializer, beta_initializer: ones and zeros (the official init).
    """

    def __init__(self, epsilon=BN_EPSILON, gamma_initializer="ones", beta_initializer="zeros",
                 **kwargs):
        kwargs.pop("divisor", None)
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.statistics = {}
        self.active_key = None   # the calibration in moving_mean / moving_variance
        self.missing = None      # why inference cannot run at the current width, if it cannot
        self._calibration = None

    def build(self, input_shape):
        self.channels = int(input_shape[-1])
        shape = (self.channels,)
        self.gamma = self.add_weight(name="gamma", shape=shape,
                                     initializer=self.gamma_initializer)
        self.beta = self.add_weight(name="beta", shape=shape,
                                    initializer=self.beta_initializer)
        self.moving_mean = self.add_weight(name="moving_mean", shape=shape,
                                           initializer="zeros", trainable=False)
        self.moving_variance = self.add_weight(name="moving_variance", shape=shape,
                                               initializer="ones", trainable=False)
        self.select_statistics(self.width)

    def call(self, inputs, training=None):
        channels = inputs.shape[-1]
        if channels is None:
            channels = ops.shape(inputs)[-1]
        elif channels > self.channels:
            raise ValueError(f"layer {self.name!r} was built for {self.channels} channels, "
                             f"got {channels}")
        x = ops.cast(inputs, "float32") if inputs.dtype in ("float16", "bfloat16") else inputs
        gamma, beta = self.gamma[:channels], self.beta[:channels]
        if training:
            mean, variance = ops.moments(x, axes=(0, 1, 2))
            if self._calibration is not None:
                self._record(x, mean, variance)
        else:
            if self.missing is not None and not in_symbolic_scope():  # shape inference runs
                raise ValueError(f"layer {self.name!r}: {self.missing}")
            mean, variance = self.moving_mean[:channels], self.moving_variance[:channels]
        y = ops.batch_normalization(x, ops.cast(mean, x.dtype), ops.cast(variance, x.dtype),
                                    axis=-1, offset=ops.cast(beta, x.dtype),
                                    scale=ops.cast(gamma, x.dtype), epsilon=self.epsilon)
        return ops.cast(y, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    # Post-statistics (`calibrate_batch_norm` drives these).

    def begin_calibration(self):
        self._calibration = []

    def _record(self, x, mean, variance):
        n = int(np.prod(x.shape[:3]))
        if n < 2:
            raise ValueError(f"layer {self.name!r}: calibration batches need more than one "
                             "value per channel")
        unbiased = ops.convert_to_numpy(variance).astype("float64") * n / (n - 1)
        self._calibration.append((ops.convert_to_numpy(mean).astype("float64"), unbiased))

    def end_calibration(self, width, resolution):
        """Stores the equal-weight average of the recorded batches' mean and unbiased variance
        (the official momentum-1/(t+1) running average) as the statistics of (width,
        resolution) and makes them active."""
        records, self._calibration = self._calibration, None
        if not records:
            raise ValueError(f"layer {self.name!r} saw no calibration batch (does the model "
                             "call it at this width?)")
        mean = np.mean([m for m, _ in records], axis=0)
        variance = np.mean([v for _, v in records], axis=0)
        key = statistics_key(width, resolution)
        self.statistics[key] = (mean.astype("float32"), variance.astype("float32"))
        self.select_statistics(width, resolution)

    def abort_calibration(self):
        self._calibration = None

    def select_statistics(self, width, resolution=None):
        """Makes the calibration of (width, resolution) active; with `resolution=None`, the
        width's only one. Where there is none (or several), inference raises saying so."""
        width_key = round(float(width), 6)
        keys = [k for k in self.statistics if k[0] == width_key]
        if resolution is not None:
            keys = [k for k in keys if k[1] == tuple(resolution)]
        if len(keys) == 1:
            self._activate(keys[0])
            return
        self.active_key = None
        if keys:
            sizes = ", ".join(f"{k[1][0]}x{k[1][1]}" for k in sorted(keys, key=str))
            self.missing = (f"width {width:g} has BatchNorm statistics at several resolutions "
                            f"({sizes}): pass resolution= to set_width")
        else:
            at = "" if resolution is None else f" at {resolution[0]}x{resolution[1]}"
            known = ", ".join(describe_key(k) for k in sorted(self.statistics, key=str))
            self.missing = (
                f"width {width:g}{at} has no BatchNorm statistics (calibrated: "
                f"{known or 'none'}); call bl_keras.slimmable.calibrate_batch_norm(model, "
                f"batches, width={width:g}) first")

    def _activate(self, key):
        mean, variance = self.statistics[key]
        c = mean.shape[0]
        full_mean = np.zeros(self.channels, "float32")
        full_variance = np.ones(self.channels, "float32")
        full_mean[:c], full_variance[:c] = mean, variance
        self.moving_mean.assign(full_mean)
        self.moving_variance.assign(full_variance)
        self.active_key, self.missing = key, None

    # Saving: the four variables as usual, then every calibration and the current width.

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for i, (key, (mean, variance)) in enumerate(sorted(self.statistics.items(), key=str)):
            width, resolution = key
            store[f"calibration_{i}_key"] = np.array(
                [width, *(resolution or (-1, -1))], "float64")
            store[f"calibration_{i}_mean"] = mean
            store[f"calibration_{i}_variance"] = variance
        active = -1
        if self.active_key is not None:
            active = sorted(self.statistics, key=str).index(self.active_key)
        store["calibration_active"] = np.array(active, "int64")

    def load_own_variables(self, store):
        super().load_own_variables(store)
        keys = set(store.keys())
        self.statistics = {}
        i = 0
        while f"calibration_{i}_key" in keys:
            raw = np.asarray(store[f"calibration_{i}_key"], "float64")
            resolution = None if raw[1] < 0 else (int(raw[1]), int(raw[2]))
            self.statistics[statistics_key(raw[0], resolution)] = (
                np.asarray(store[f"calibration_{i}_mean"], "float32"),
                np.asarray(store[f"calibration_{i}_variance"], "float32"))
            i += 1
        active = int(np.asarray(store["calibration_active"])) if (
            "calibration_active" in keys) else -1
        if active >= 0:
            self._activate(sorted(self.statistics, key=str)[active])
        else:
            self.select_statistics(self.width)

    def plain_layer(self, width):
        return keras.layers.BatchNormalization(epsilon=self.epsilon, momentum=0.9,
                                               name=self.name, dtype=self.dtype_policy)

    def get_config(self):
        config = {**super().get_config(), "epsilon": self.epsilon,
                  "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
                  "beta_initializer": keras.initializers.serialize(self.beta_initializer)}
        config.pop("divisor")
        return config


SLIMMABLE_LAYERS = (SlimmableConv2D, SlimmableDepthwiseConv2D, SlimmableDense,
                    SlimmableBatchNormalization)
