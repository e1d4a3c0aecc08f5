"""The official PyTorch Big-Little models (IBM/BigLittleNet), built from a checkout of that code
and exported with `torch.onnx.export`: the bar our exports are timed against in ONNX Runtime.

No official code is part of this package; pass the directory of a checkout
(`git clone https://github.com/IBM/BigLittleNet`). Needs torch (the `torch` extra).

    >>> torch_model = official.build("/src/BigLittleNet", "bl_resnet50")  # doctest: +SKIP
    >>> onnx_bytes = official.to_onnx(torch_model)                          # doctest: +SKIP
    >>> timing.measure({"official": official.external(onnx_bytes), ...})  # doctest: +SKIP

The official model takes NCHW images already normalised (`normalise`); ours takes NHWC RGB in
[0, 255] and normalises inside, and ends in a softmax where the official one gives logits.
"""

import hashlib
import importlib.util
import pathlib
import sys

import numpy as np

from bl_keras import timing
from bl_keras.models.common import IMAGENET_MEAN, IMAGENET_STD

# Our model name -> (official builder, its positional arguments).
BUILDERS = {
    "bl_resnet50": ("blresnet_model", (50, 2, 4)),
    "bl_resnet101": ("blresnet_model", (101, 2, 4)),
    "bl_resnext50_32x4d": ("blresnext_model", (50, 4, 32, 2, 4)),
    "bl_resnext101_32x4d": ("blresnext_model", (101, 4, 32, 2, 4)),
    "bl_resnext101_64x4d": ("blresnext_model", (101, 4, 64, 2, 4)),
    "bl_seresnext50_32x4d": ("blseresnext_model", (50, 4, 32, 2, 4)),
    "bl_seresnext101_32x4d": ("blseresnext_model", (101, 4, 32, 2, 4)),
    "bl_seresnext101_64x4d": ("blseresnext_model", (101, 4, 64, 2, 4)),
}


def _official_models(code_dir):
    """The official `models` package of a BigLittleNet checkout, imported under a name of its
    own (so neither another checkout nor any other `models` package is picked up instead)."""
    code_dir = pathlib.Path(code_dir).expanduser().resolve()
    init = code_dir / "models" / "__init__.py"
    if not (code_dir / "models" / "blresnet.py").is_file() or not init.is_file():
        raise FileNotFoundError(f"{code_dir} is not a checkout of IBM/BigLittleNet (no "
                                "models/blresnet.py there)")
    name = f"_biglittlenet_models_{hashlib.sha1(str(code_dir).encode()).hexdigest()[:12]}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def build(code_dir, name="bl_resnet50", state_dict=None):
    """The official PyTorch model standing for our `name`, in eval mode.

    Args:
        code_dir: a checkout of IBM/BigLittleNet.
        name: one of `BUILDERS`.
        state_dict: optional official weights (anything `bl_keras.convert.read_state_dict`
            reads); PyTorch's initialisation otherwise.
    """
    import torch

    if name not in BUILDERS:
        raise ValueError(f"no official model for {name!r}; known: {sorted(BUILDERS)}")
    builder, args = BUILDERS[name]
    model = getattr(_official_models(code_dir), builder)(*args)
    if state_dict is not None:
        from bl_keras import convert

        state = convert.read_state_dict(state_dict)
        result = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()},
                                       strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise ValueError(f"state_dict does not fit the official {name}: missing "
                             f"{missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    return model.eval()


def to_onnx(torch_model, size=224, opset=17):
    """ONNX bytes of a PyTorch image model (NCHW input "input", dynamic batch), exported with
    `torch.onnx.export` as a user of the official code would."""
    import io

    import torch

    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(torch_model, torch.zeros(1, 3, size, size), buffer,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=opset, dynamo=False)
    return buffer.getvalue()


def external(onnx_model, size=224, num_threads=None):
    """The official ONNX model as a `bl_keras.timing.External` on ONNX Runtime."""
    return timing.External("onnx", (3, size, size),
                           lambda batch: timing.onnx_runner(onnx_model, num_threads))


def normalise(images):
    """NHWC RGB in [0, 255] -> the official model's NCHW ImageNet-normalised input."""
    images = np.asarray(images, np.float32)
    mean = 255.0 * np.asarray(IMAGENET_MEAN, np.float32)
    std = 255.0 * np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(((images - mean) / std).transpose(0, 3, 1, 2))


__all__ = ["BUILDERS", "build", "to_onnx", "external", "normalise"]
