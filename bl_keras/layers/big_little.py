"""The Big-Little module (Chen et al., "Big-Little Net", ICLR 2019, section 3 and Appendix A.2)."""

import keras
from keras import layers, ops

from bl_keras.layers.blocks import (
    BLOCK_TYPES,
    ResidualBlock,
    batch_norm,
    bottleneck_width,
    check_positive_int,
    conv,
)
from bl_keras.layers.resample import UPSAMPLE_MODES, upsample_add, upsample_to

MERGE_MODES = ("add", "concat")


@keras.saving.register_keras_serializable(package="bl_keras")
class BigLittleModule(layers.Layer):
    """One Big-Little module: K branches at scales 1, 1/2, ..., 1/2^(K-1), merged, then fused.

    For the default K=2, with L = `blocks`:

    - big branch: L - 1 residual blocks of width `filters` at half resolution (the first block
      has stride 2 and a stride-2 shortcut); its last block has no final ReLU.
    - little branch: max(1, L // beta - 1) residual blocks at full resolution with
      `filters // alpha` channels (ResNeXt: cardinality `groups // alpha`, group width
      `base_width * alpha`), ending with ReLU, then a 1x1 conv + BN (no ReLU) to `filters`.
    - merge: the big output is resized to the little output's size ("nearest" with PyTorch's
      index rule as the official code, or "bilinear" as the paper's text), added, and ReLU'd.
      `merge="concat"` instead concatenates the branches (the big one `filters - filters //
      alpha` wide, the little one `filters // alpha` wide, without its 1x1 expansion) and
      applies ReLU (Appendix A.4, Table 7). The 1x1 convolution that mixes the concatenated
      channels is the fusion block's first one: an extra 1x1 conv + BN would add 1.38M
      parameters and 0.62 GMACs to bL-ResNet-50, while without it we count 20.59M / 2.08G
      against Table 7's 20.57M / 2.01G.
    - fusion: one residual block of width `filters` with the module's stride.

    For K > 2, branch k runs at scale 1/2^k with k stride-2 blocks first; the branch K-1 levels
    below the big one is `alpha^(K-1-k)` times narrower and `beta^(K-1-k)` times shallower.
    The official code is the reference wherever the paper is silent; one difference is kept on
    purpose: with L = 2 the official big branch (one block) keeps its final ReLU, here the big
    branch never has it, as the paper's design describes.

    Args:
        filters: output channels of the module (and of the big branch).
        blocks: L, the number of residual blocks of the corresponding ResNet stage (>= 2).
        alpha: width reduction of the little branch (positive integer).
        beta: depth reduction of the little branch (positive integer).
        strides: stride of the fusion block, 1 or 2.
        merge: "add" (default) or "concat".
        upsample: "nearest" (default, official code) or "bilinear" (paper text).
        block_type: "bottleneck" or "basic".
        groups: cardinality of the big branch's 3x3 convolutions (ResNeXt), 1 for ResNet.
        base_width: ResNeXt group width at 64 channels (4 for 32x4d); 64 for plain ResNet.
        se_ratio: squeeze-excitation ratio in every block (16 for SE-ResNeXt), 0 for none.
        branches: K, the number of branches (>= 2).
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> module = BigLittleModule(256, blocks=3, alpha=2, beta=4, strides=2)
        >>> module(keras.ops.ones((1, 56, 56, 64))).shape
        (1, 28, 28, 256)
    """

    def __init__(
        self,
        filters,
        blocks,
        alpha=2,
        beta=4,
        strides=1,
        merge="add",
        upsample="nearest",
        block_type="bottleneck",
        groups=1,
        base_width=64,
        se_ratio=0,
        branches=2,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg, value in (("filters", filters), ("alpha", alpha), ("beta", beta),
                           ("groups", groups), ("base_width", base_width)):
            check_positive_int(arg, value)
        check_positive_int("blocks", blocks)
        if blocks < 2:
            raise ValueError(f"a Big-Little module needs blocks >= 2, got {blocks!r}")
        check_positive_int("branches", branches)
        if branches < 2:
            raise ValueError(f"a Big-Little module needs branches >= 2, got {branches!r}")
        if strides not in (1, 2):
            raise ValueError(f"strides must be 1 or 2, got {strides!r}")
        if merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {MERGE_MODES}, got {merge!r}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        if block_type not in BLOCK_TYPES:
            raise ValueError(f"block_type must be one of {BLOCK_TYPES}, got {block_type!r}")
        self.filters = filters
        self.blocks = blocks
        self.alpha = alpha
        self.beta = beta
        self.strides = strides
        self.merge = merge
        self.upsample = upsample
        self.block_type = block_type
        self.groups = groups
        self.base_width = base_width
        self.se_ratio = se_ratio
        self.num_branches = branches

        narrow_widths = [filters // alpha ** (branches - 1 - k) for k in range(branches - 1)]
        if min(narrow_widths) < 1:
            raise ValueError(f"alpha={alpha} leaves no channels of filters={filters}")
        big_width = filters - sum(narrow_widths) if merge == "concat" else filters
        if big_width < 1:
            raise ValueError(
                f"merge='concat' with alpha={alpha} leaves the big branch no channels"
            )

        # self.branch_blocks[k]: blocks of branch k, k = 0 at full resolution, k = K-1 the big one.
        self.branch_blocks = []
        self.expand_convs = []  # 1x1 conv + BN lifting a narrow branch to `filters`, or None
        self.expand_bns = []
        for k in range(branches):
            level = branches - 1 - k  # 0 for the big branch
            is_big = level == 0
            width_out = big_width if is_big else narrow_widths[k]
            depth = blocks - 1 if is_big else max(1, blocks // beta**level - 1)
            depth = max(depth, k)
            prefix = self._branch_name(k)
            branch = []
            for i in range(depth):
                branch.append(
                    self._block(
                        width_out,
                        reduction=alpha**level,
                        strides=2 if i < k else 1,
                        last_relu=not (is_big and i == depth - 1),
                        name=f"{prefix}_block{i + 1}",
                    )
                )
            self.branch_blocks.append(branch)
            if merge == "add" and width_out != filters:
                self.expand_convs.append(
                    conv(filters, 1, f"{prefix}_e_conv", dtype=self.dtype_policy)
                )
                self.expand_bns.append(batch_norm(f"{prefix}_e_bn", dtype=self.dtype_policy))
            else:
                self.expand_convs.append(None)
                self.expand_bns.append(None)
        self.fusion = self._block(filters, reduction=1, strides=strides, last_relu=True,
                                  name="fusion_block")

    def _branch_name(self, k):
        if self.num_branches == 2:
            return "little" if k == 0 else "big"
        return f"branch{k}"

    def _block(self, filters, reduction, strides, last_relu, name):
        # Sublayers follow this module's dtype policy (a per-layer "mixed_float16" too).
        if self.block_type == "basic":
            return ResidualBlock(filters, "basic", strides=strides, se_ratio=self.se_ratio,
                                 last_relu=last_relu, name=name, dtype=self.dtype_policy)
        groups = self.groups // reduction if self.groups > 1 else 1
        if self.groups > 1 and (groups < 1 or self.groups % reduction):
            raise ValueError(
                f"groups={self.groups} cannot be divided by alpha^k={reduction} for a narrow branch"
            )
        base_width = self.base_width * reduction if self.groups > 1 else self.base_width
        return ResidualBlock(
            filters,
            "bottleneck",
            strides=strides,
            width=bottleneck_width(filters, groups, base_width),
            groups=groups,
            se_ratio=self.se_ratio,
            last_relu=last_relu,
            name=name,
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        shapes = []
        for branch, e_conv, e_bn in zip(self.branch_blocks, self.expand_convs, self.expand_bns):
            shape = tuple(input_shape)
            for block in branch:
                block.build(shape)
                shape = block.compute_output_shape(shape)
            if e_conv is not None:
                e_conv.build(shape)
                shape = e_conv.compute_output_shape(shape)
                e_bn.build(shape)
            shapes.append(shape)
        self.fusion.build((*shapes[0][:3], self.filters))

    def call(self, x, training=None):
        outputs = []
        for branch, e_conv, e_bn in zip(self.branch_blocks, self.expand_convs, self.expand_bns):
            y = x
            for block in branch:
                y = block(y, training=training)
            if e_conv is not None:
                y = e_bn(e_conv(y), training=training)
            outputs.append(y)
        full = outputs[0]
        if self.merge == "add":
            merged = full
            for y in outputs[1:]:
                merged = upsample_add(y, merged, self.upsample)
        else:
            resized = [upsample_to(y, full, self.upsample) for y in reversed(outputs[1:])]
            merged = ops.concatenate([*resized, full], axis=-1)
        return self.fusion(ops.relu(merged), training=training)

    def compute_output_shape(self, input_shape):
        return self.fusion.compute_output_shape((*tuple(input_shape)[:3], self.filters))

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "blocks": self.blocks,
            "alpha": self.alpha,
            "beta": self.beta,
            "strides": self.strides,
            "merge": self.merge,
            "upsample": self.upsample,
            "block_type": self.block_type,
            "groups": self.groups,
            "base_width": self.base_width,
            "se_ratio": self.se_ratio,
            "branches": self.num_branches,
        }
