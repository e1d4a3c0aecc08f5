"""Loading official PyTorch weights into the Keras models: Big-Little Net (IBM/BigLittleNet) and
the US-MobileNets of MutualNet / US-Nets (taoyang1122/MutualNet, JiahuiYu/slimmable_networks).

The official code (`models/blresnet.py`, `blresnext.py`, `blseresnext.py`) names its modules
`conv1`/`bn1` (stem), `b_conv0`, `l_conv0..2`, `bl_init` (the Big-Little stem), `layerN.big.i`,
`layerN.little.i`, `layerN.little_e` and `layerN.fusion.0` (Big-Little modules), `layer4.i` and
`fc`. `official_targets` walks a Keras model and lists, for every official `state_dict` key, the
Keras variable it fills and how the array is laid out; `assign_official` checks a state dict
against that table (all problems in one ValueError) and copies the arrays in.

Layouts: conv weights OIHW -> HWIO (grouped: (O, I/groups, kH, kW) -> (kH, kW, I/groups, O)),
linear weights (out, in) -> (in, out), the SE block's 1x1 convs (out, in, 1, 1) -> dense
(in, out), BatchNorm weight/bias/running_mean/running_var -> gamma/beta/moving_mean/
moving_variance. `num_batches_tracked` is ignored.

MutualNet's `models/mobilenet_v1.py` / `mobilenet_v2.py` name the stem `features.0.{0,1}`, block
N `features.N.body.K` (K = 3 * its unit + 0 for the conv, 1 for the BN; units in order expand,
depthwise, pointwise / project), V2's tail `features.18.{0,1}` and the classifier
`classifier.0`; our layers are `stem_conv`, `blockN_{expand,dw,pw,project}_{conv,bn}`,
`head_conv`/`head_bn` and `predictions` (`mobilenet_targets`). Depthwise weights (C, 1, kH, kW)
-> (kH, kW, C, 1). Their checkpoints hold no usable BatchNorm statistics (the official code
computes post-statistics after loading: `bl_keras.slimmable.calibrate_batch_norm`), so every
`running_mean`/`running_var` is ignored, the per-width `bn.N.running_*` of `USBatchNorm2d`
included, and BatchNorm layers take gamma and beta only. The plain `mobilenet_v1/v2` at width 1.0
take the same weights; their moving statistics must then be re-estimated.

Only the Big-Little models and the US-MobileNets have official checkpoints. The ResNet baselines
(`resnet50`, ...) are mapped with the same names (`layerN.i`), but torchvision checkpoints do not
fit them: their strided shortcut is a strided 1x1 conv (`downsample.0`), ours the official
AvgPool + 1x1 conv, and the mismatch is reported as such.

>>> from bl_keras import convert, models
>>> model = models.bl_resnet50(include_preprocessing=False)
>>> convert.load_official_weights(model, "blresnet50.pth.tar")  # doctest: +SKIP
"""

import dataclasses
import os
import re
from collections.abc import Mapping

import numpy as np
from keras import layers

from bl_keras.layers.big_little import BigLittleModule
from bl_keras.layers.blocks import ResidualBlock
from bl_keras.layers.slimmable import (
    SlimmableBatchNormalization,
    SlimmableConv2D,
    SlimmableDense,
    SlimmableDepthwiseConv2D,
)

# Functional layers of our models -> official module names.
LAYER_NAMES = {
    "stem_conv": "conv1",
    "stem_bn": "bn1",
    "stem_big_conv": "b_conv0",
    "stem_big_bn": "bn_b0",
    "stem_little1_conv": "l_conv0",
    "stem_little1_bn": "bn_l0",
    "stem_little2_conv": "l_conv1",
    "stem_little2_bn": "bn_l1",
    "stem_little3_conv": "l_conv2",
    "stem_little3_bn": "bn_l2",
    "stem_fuse_conv": "bl_init",
    "stem_fuse_bn": "bn_bl_init",
    "predictions": "fc",
}
STAGE_MODULE = re.compile(r"stage(\d+)")
STAGE_BLOCK = re.compile(r"stage(\d+)_block(\d+)")
BN_PARAMS = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)
IGNORED_SUFFIX = "num_batches_tracked"
TORCH_SUFFIXES = (".pth", ".pt", ".tar")
CHECKPOINT_ENTRIES = ("state_dict", "model")  # where a training checkpoint keeps its weights
NPZ_STATE_PREFIX = "state/"  # a reference .npz of state dict and test arrays: the state dict
HINT = "Check that the model, alpha, beta and classes are those of the checkpoint."
MAX_LISTED = 20  # entries shown per category in a mismatch error

# How an official array maps onto a Keras variable: (PyTorch shape from Keras shape,
# Keras array from PyTorch array).
LAYOUTS = {
    "conv": (lambda s: (s[3], s[2], s[0], s[1]), lambda a: a.transpose(2, 3, 1, 0)),
    "depthwise": (lambda s: (s[2], s[3], s[0], s[1]), lambda a: a.transpose(2, 3, 0, 1)),
    "dense": (lambda s: (s[1], s[0]), lambda a: a.T),
    "conv1x1_dense": (lambda s: (s[1], s[0], 1, 1), lambda a: a.reshape(a.shape[:2]).T),
    "same": (lambda s: tuple(s), lambda a: a),
}


@dataclasses.dataclass(frozen=True)
class Target:
    """The Keras variable one official key fills, and the layout conversion it needs."""

    variable: object
    layout: str

    @property
    def torch_shape(self):
        """Shape the official (PyTorch) array must have."""
        return tuple(LAYOUTS[self.layout][0](tuple(self.variable.shape)))

    def to_keras(self, array):
        """The official array rearranged (and cast) for the Keras variable."""
        return np.asarray(LAYOUTS[self.layout][1](array), dtype=self.variable.dtype)


def conv_targets(prefix, conv, layout="conv"):
    """`prefix.weight` (and `prefix.bias`) of a Conv2D or of a Dense standing for a 1x1 conv."""
    table = {f"{prefix}.weight": Target(conv.kernel, layout)}
    if conv.use_bias:
        table[f"{prefix}.bias"] = Target(conv.bias, "same")
    return table


def bn_targets(prefix, bn):
    """The four BatchNorm arrays of `prefix`."""
    return {
        f"{prefix}.{torch_name}": Target(getattr(bn, keras_name), "same")
        for torch_name, keras_name in BN_PARAMS
    }


def dense_targets(prefix, dense):
    """A Linear layer: `prefix.weight` (out, in) and `prefix.bias`."""
    return conv_targets(prefix, dense, layout="dense")


def layer_targets(prefix, layer):
    """Targets of one plain Conv2D, BatchNormalization or Dense layer."""
    if isinstance(layer, layers.Conv2D):
        return conv_targets(prefix, layer)
    if isinstance(layer, layers.BatchNormalization):
        return bn_targets(prefix, layer)
    if isinstance(layer, layers.Dense):
        return dense_targets(prefix, layer)
    raise ValueError(f"no official counterpart for layer {layer.name!r} of type "
                     f"{type(layer).__name__}")


def block_targets(block, prefix):
    """Official keys of one residual block (e.g. prefix "layer2.big.0") -> its variables.

    The official shortcut is `downsample = [AvgPool (if strided), conv1x1, BN (if the channel
    count changes)]`, so its conv is `downsample.1` in a strided block, `downsample.0` otherwise.
    The SE layer's 1x1 convs `se_layer.fc1/fc2` become our dense layers `se.fc1/fc2`.
    The block must be built.
    """
    if not block.built:
        raise ValueError(f"block {block.name!r} must be built before mapping its weights")
    table = {}
    for i, (conv, bn) in enumerate(zip(block.convs, block.bns), start=1):
        table.update(conv_targets(f"{prefix}.conv{i}", conv))
        table.update(bn_targets(f"{prefix}.bn{i}", bn))
    if block.downsample_conv is not None:
        first = 1 if block.strides != 1 else 0
        table.update(conv_targets(f"{prefix}.downsample.{first}", block.downsample_conv))
        table.update(bn_targets(f"{prefix}.downsample.{first + 1}", block.downsample_bn))
    if block.se is not None:
        table.update(conv_targets(f"{prefix}.se_layer.fc1", block.se.fc1, "conv1x1_dense"))
        table.update(conv_targets(f"{prefix}.se_layer.fc2", block.se.fc2, "conv1x1_dense"))
    return table


def module_targets(module, prefix):
    """Official keys of one Big-Little module (prefix "layerN") -> its variables."""
    if module.num_branches != 2 or module.merge != "add":
        raise ValueError(
            f"official weights exist only for 2-branch modules merged by 'add'; module "
            f"{module.name!r} has branches={module.num_branches!r}, merge={module.merge!r}"
        )
    table = {}
    for branch, blocks in (("little", module.branch_blocks[0]), ("big", module.branch_blocks[1])):
        for i, block in enumerate(blocks):
            table.update(block_targets(block, f"{prefix}.{branch}.{i}"))
    if module.expand_convs[0] is not None:
        table.update(conv_targets(f"{prefix}.little_e.0", module.expand_convs[0]))
        table.update(bn_targets(f"{prefix}.little_e.1", module.expand_bns[0]))
    table.update(block_targets(module.fusion, f"{prefix}.fusion.0"))
    return table


MOBILENET_UNIT = re.compile(r"block(\d+)_(expand|dw|pw|project)_(conv|bn)")
MOBILENET_UNITS = ("expand", "dw", "pw", "project")  # the official `body` order
BN_STATISTICS = re.compile(r"\.(running_mean|running_var)$")
MOBILENET_HINT = ("Check that the model (us_mobilenet_v1 / v2), width_range (built at its "
                  "largest width, 1.0 for the official weights) and classes are those of the "
                  "checkpoint.")


def is_mobilenet(model):
    """Whether `model` is one of our (US-)MobileNets, named as `bl_keras.models.slimmable`."""
    return any(MOBILENET_UNIT.fullmatch(layer.name) for layer in model.layers)


def _mobilenet_layer_targets(prefix, layer):
    if isinstance(layer, (layers.DepthwiseConv2D, SlimmableDepthwiseConv2D)):
        return conv_targets(prefix, layer, "depthwise")
    if isinstance(layer, (layers.Conv2D, SlimmableConv2D)):
        return conv_targets(prefix, layer)
    if isinstance(layer, (layers.BatchNormalization, SlimmableBatchNormalization)):
        return {f"{prefix}.weight": Target(layer.gamma, "same"),
                f"{prefix}.bias": Target(layer.beta, "same")}
    if isinstance(layer, (layers.Dense, SlimmableDense)):
        return dense_targets(prefix, layer)
    raise ValueError(f"no official counterpart for layer {layer.name!r} of type "
                     f"{type(layer).__name__}")


def mobilenet_targets(model):
    """Official MutualNet / US-Net keys of a `us_mobilenet_v1/v2` (or plain `mobilenet_v1/v2`)
    -> its variables. BatchNorm statistics have no key (see the module docstring)."""
    names = {layer.name for layer in model.layers}
    blocks = {int(m[1]) for m in map(MOBILENET_UNIT.fullmatch, names) if m}
    table = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        unit = MOBILENET_UNIT.fullmatch(layer.name)
        part = layer.name.rsplit("_", 1)[-1]  # conv or bn
        if unit:
            block = unit[1]
            present = [u for u in MOBILENET_UNITS if f"block{block}_{u}_conv" in names]
            index = 3 * present.index(unit[2]) + (part == "bn")
            prefix = f"features.{block}.body.{index}"
        elif layer.name in ("stem_conv", "stem_bn"):
            prefix = f"features.0.{int(part == 'bn')}"
        elif layer.name in ("head_conv", "head_bn"):
            prefix = f"features.{max(blocks) + 1}.{int(part == 'bn')}"
        elif layer.name == "predictions":
            prefix = "classifier.0"
        else:
            raise ValueError(f"no official counterpart for layer {layer.name!r} of model "
                             f"{model.name!r}")
        table.update(_mobilenet_layer_targets(prefix, layer))
    statistics = {id(layer.moving_mean) for layer in model.layers if hasattr(layer, "moving_mean")}
    statistics |= {id(layer.moving_variance) for layer in model.layers
                   if hasattr(layer, "moving_variance")}
    _check_covered(model, table, statistics)
    return table


def _check_covered(model, table, ignored=frozenset()):
    covered = {id(target.variable) for target in table.values()} | set(ignored)
    uncovered = [w.path for w in model.weights if id(w) not in covered]
    if uncovered:
        raise ValueError(f"model {model.name!r} has weights with no official counterpart: "
                         f"{', '.join(uncovered)}")


def official_targets(model):
    """Every official `state_dict` key (without `num_batches_tracked`; for the MobileNets,
    without BatchNorm statistics) -> its Keras `Target`, in the model's layer order. Raises a
    ValueError if the model has weights the official networks do not have."""
    if is_mobilenet(model):
        return mobilenet_targets(model)
    table = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        module = STAGE_MODULE.fullmatch(layer.name)
        block = STAGE_BLOCK.fullmatch(layer.name)
        if layer.name in LAYER_NAMES:
            table.update(layer_targets(LAYER_NAMES[layer.name], layer))
        elif module and isinstance(layer, BigLittleModule):
            table.update(module_targets(layer, f"layer{module[1]}"))
        elif block and isinstance(layer, ResidualBlock):
            table.update(block_targets(layer, f"layer{block[1]}.{int(block[2]) - 1}"))
        else:
            raise ValueError(f"no official counterpart for layer {layer.name!r} of model "
                             f"{model.name!r}")
    _check_covered(model, table)
    return table


def _to_numpy(value):
    """A numpy array from a numpy array or torch tensor; floating point becomes float32."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        value = value.numpy()
    array = np.asarray(value)
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array


def _load_torch(path):
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"reading the PyTorch checkpoint {path!r} needs torch: pip install bl_keras[torch]"
        ) from error
    return torch.load(path, map_location="cpu", weights_only=True)


def _read_file(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such weights file: {path!r}")
    if path.endswith(".npz"):
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    if path.endswith(TORCH_SUFFIXES):
        return _load_torch(path)
    raise ValueError(
        f"unsupported weights file {path!r}: expected .npz or a PyTorch checkpoint "
        f"({', '.join(TORCH_SUFFIXES)})"
    )


def read_state_dict(source):
    """An official state dict as {key: float32 numpy array}, from a `.pt`/`.pth`/`.pth.tar`
    checkpoint (weights possibly under "state_dict" or "model"), a `.npz` file (of the state
    dict, or with it under `state/<key>` beside other arrays, as the reference files) or a
    mapping of arrays or tensors. Strips DataParallel's "module." prefix and drops
    `num_batches_tracked`."""
    if isinstance(source, Mapping):
        raw = source
    elif isinstance(source, (str, os.PathLike)):
        raw = _read_file(os.fspath(source))
    else:
        raise ValueError(
            f"source must be a path or a mapping of arrays, got {type(source).__name__}: "
            f"{source!r:.100}"
        )
    if not isinstance(raw, Mapping):
        raise ValueError(f"expected a state dict (mapping) in {source!r}, got {type(raw).__name__}")
    for entry in CHECKPOINT_ENTRIES:
        if isinstance(raw.get(entry), Mapping):
            raw = raw[entry]
            break
    if any(key.startswith(NPZ_STATE_PREFIX) for key in raw):
        raw = {key[len(NPZ_STATE_PREFIX):]: value for key, value in raw.items()
               if key.startswith(NPZ_STATE_PREFIX)}
    state = {}
    for key, value in raw.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name.endswith(IGNORED_SUFFIX):
            continue
        if name in state:
            raise ValueError(f"key {name!r} appears twice (with and without 'module.')")
        state[name] = _to_numpy(value)
    return state


def _listing(title, lines):
    shown = [f"  {line}" for line in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        shown.append(f"  ... and {len(lines) - MAX_LISTED} more")
    return [f"{title} ({len(lines)}):", *shown]


def check_state_dict(targets, state, name="model", hint=HINT):
    """Raises one ValueError listing every missing key, unexpected key and shape mismatch of
    `state` against `targets` (see `official_targets`), ending its first line with `hint`;
    returns None if all match."""
    missing = [key for key in targets if key not in state]
    unexpected = [key for key in state if key not in targets]
    mismatched = [
        f"{key}: expected {targets[key].torch_shape}, got {tuple(state[key].shape)}"
        for key in targets
        if key in state and tuple(state[key].shape) != targets[key].torch_shape
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [
        f"official weights do not match {name} (missing keys: {len(missing)}, unexpected "
        f"keys: {len(unexpected)}, shape mismatches: {len(mismatched)}; shapes in PyTorch "
        f"layout). {hint}"
    ]
    if missing:
        lines += _listing("missing keys (in the model, not in the weights)", missing)
    if unexpected:
        lines += _listing("unexpected keys (in the weights, not in the model)", unexpected)
    if mismatched:
        lines += _listing("shape mismatches", mismatched)
    raise ValueError("\n".join(lines))


def assign_official(targets, state, name="model", hint=HINT):
    """Checks `state` against `targets` (nothing is assigned if anything differs), then copies
    every array, converted to Keras layout, into its variable."""
    check_state_dict(targets, state, name, hint)
    for key, target in targets.items():
        target.variable.assign(target.to_keras(state[key]))


def load_official_weights(model, source):
    """Loads official PyTorch Big-Little Net or MutualNet / US-Net weights into `model` and
    returns it.

    Args:
        model: a built Big-Little model of `bl_keras.models` (e.g. `bl_resnet50(alpha=2,
            beta=4)`) or a `us_mobilenet_v1/v2` (built at width 1.0: the checkpoint's full
            width; plain `mobilenet_v1/v2(1.0)` too) matching the checkpoint's architecture.
        source: path to an official `.pth`/`.pth.tar` checkpoint (read with torch, which must
            be installed: `pip install bl_keras[torch]`), path to a `.npz` of the state dict,
            or a mapping key -> numpy array or torch tensor. A "state_dict" (or "model")
            entry, `state/` keys of a `.npz` and "module." prefixes are handled;
            `num_batches_tracked` is ignored, and so are the MobileNets' BatchNorm statistics
            (calibrate them after loading). A model built with `include_top=False` takes all
            weights but the classifier's (`fc.*`, `classifier.*`).

    Raises:
        ValueError: listing all missing keys, unexpected keys and shape mismatches.
    """
    targets = official_targets(model)
    state = read_state_dict(source)
    head, hint = "fc", HINT
    if is_mobilenet(model):
        head, hint = "classifier", MOBILENET_HINT
        state = {k: v for k, v in state.items() if not BN_STATISTICS.search(k)}
    if head not in {t.split(".", 1)[0] for t in targets}:
        # A feature extractor (include_top=False) takes everything but the classifier, as
        # keras.applications does with ImageNet weights.
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    assign_official(targets, state, f"model {model.name!r}", hint)
    return model


def convert_checkpoint(source, model_name, output, **model_kwargs):
    """Builds `models.get(model_name, **model_kwargs)`, loads the official weights from
    `source` and saves the model to `output` (a `.keras` file). Returns the model."""
    from bl_keras import models

    if not str(output).endswith(".keras"):
        raise ValueError(f"output must be a .keras file, got {str(output)!r}")
    model = load_official_weights(models.get(model_name, **model_kwargs), source)
    model.save(output)
    return model
