"""Every custom layer of bl_keras through Keras' own layer harness,
`keras.src.testing.TestCase.run_layer_test` (the one Keras and keras-hub test their layers with):
build / symbolic / eager calls, weight counts, config and serialization round-trips, one compiled
training step, and the mixed-precision check (a per-layer `dtype="mixed_float16"` policy must give
float16 outputs, as `compute_output_spec` predicts, with float32 weights; our composite layers
must therefore hand their dtype policy to every sublayer).

Sizes are tiny so the file runs in well under a minute on two cores.
"""

import pytest
from keras.src import testing

from bl_keras.layers.big_little import BigLittleModule
from bl_keras.layers.blocks import ResidualBlock, SqueezeExcite
from bl_keras.layers.merge import UpsampleAdd
from bl_keras.layers.shuffle import ChannelShuffle
from bl_keras.layers.slimmable import (
    SlimmableBatchNormalization,
    SlimmableConv2D,
    SlimmableDense,
    SlimmableDepthwiseConv2D,
)
from bl_keras.models.common import MinImageSize
from bl_keras.models.speech import FrequencyUpsample, MinFrames

# Per ResidualBlock: one kernel per conv; per BatchNormalization two trainable (gamma, beta) and
# two non-trainable (moving mean, moving variance) weights; SqueezeExcite: two Dense layers with
# bias.
BN_TRAINABLE, BN_NON_TRAINABLE, SE_TRAINABLE = 2, 2, 4

# The harness' training step feeds a generator and also trains the weightless layers.
pytestmark = [
    pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning"),
    pytest.mark.filterwarnings("ignore:The model does not have any trainable weights:UserWarning"),
]


class LayerHarnessTest(testing.TestCase):
    def test_squeeze_excite(self):
        self.run_layer_test(
            SqueezeExcite,
            init_kwargs={"ratio": 4},
            input_shape=(2, 8, 8, 16),
            expected_output_shape=(2, 8, 8, 16),
            expected_num_trainable_weights=SE_TRAINABLE,
            expected_num_non_trainable_weights=0,
            supports_masking=False,
            run_mixed_precision_check=True,
        )

    def test_residual_block_basic_identity_shortcut(self):
        # Identity shortcut: the input (float16 under mixed precision) meets the conv branch.
        self.run_layer_test(
            ResidualBlock,
            init_kwargs={"filters": 16, "block_type": "basic"},
            input_shape=(2, 8, 8, 16),
            expected_output_shape=(2, 8, 8, 16),
            expected_num_trainable_weights=2 + 2 * BN_TRAINABLE,
            expected_num_non_trainable_weights=2 * BN_NON_TRAINABLE,
            supports_masking=False,
            run_mixed_precision_check=True,
        )

    def test_residual_block_bottleneck_strided_se(self):
        # Strided ResNeXt bottleneck with SE and the pooled 1x1 conv + BN shortcut.
        self.run_layer_test(
            ResidualBlock,
            init_kwargs={
                "filters": 32,
                "strides": 2,
                "width": 8,
                "groups": 2,
                "se_ratio": 4,
                "last_relu": False,
            },
            input_shape=(2, 8, 8, 16),
            expected_output_shape=(2, 4, 4, 32),
            expected_num_trainable_weights=(3 + 1) + (3 + 1) * BN_TRAINABLE + SE_TRAINABLE,
            expected_num_non_trainable_weights=(3 + 1) * BN_NON_TRAINABLE,
            supports_masking=False,
            run_mixed_precision_check=True,
        )

    def test_big_little_module(self):
        # Bottleneck, merge by addition, nearest (the exact 2x fast path), strided fusion.
        # big: 1 block, identity channels (3 convs + 3 BN); little: 1 block to 8 channels with a
        # 1x1 shortcut (4 convs + 4 BN), then the 1x1 expansion (conv + BN); fusion: 3 + 3.
        convs, bns = 3 + 4 + 1 + 3, 3 + 4 + 1 + 3
        self.run_layer_test(
            BigLittleModule,
            init_kwargs={"filters": 16, "blocks": 2, "alpha": 2, "beta": 2, "strides": 2},
            input_shape=(2, 8, 8, 16),
            expected_output_shape=(2, 4, 4, 16),
            expected_num_trainable_weights=convs + bns * BN_TRAINABLE,
            expected_num_non_trainable_weights=bns * BN_NON_TRAINABLE,
            supports_masking=False,
            run_mixed_precision_check=True,
        )

    def test_big_little_module_basic_concat_bilinear_se_three_branches(self):
        # Basic blocks with SE, K=3 branches on an odd size (7 -> 4 -> 2), concatenated after a
        # bilinear resize. Branch widths 4, 8 and 4 (big), depths 1, 1 and 2; every branch's
        # first block changes the channel count (2 convs + 1x1 shortcut, 3 BN each); the big
        # branch's second (strided: pooled shortcut) block and the fusion block keep it
        # (2 convs, 2 BN).
        blocks_with_projection, blocks_identity = 3, 2
        convs = 3 * blocks_with_projection + 2 * blocks_identity
        ses = blocks_with_projection + blocks_identity
        self.run_layer_test(
            BigLittleModule,
            init_kwargs={
                "filters": 16,
                "blocks": 3,
                "alpha": 2,
                "beta": 2,
                "merge": "concat",
                "upsample": "bilinear",
                "block_type": "basic",
                "se_ratio": 4,
                "branches": 3,
            },
            input_shape=(2, 7, 7, 16),
            expected_output_shape=(2, 7, 7, 16),
            expected_num_trainable_weights=convs * (1 + BN_TRAINABLE) + ses * SE_TRAINABLE,
            expected_num_non_trainable_weights=convs * BN_NON_TRAINABLE,
            supports_masking=False,
            run_mixed_precision_check=True,
        )

    def test_upsample_add_nearest(self):
        self.run_layer_test(
            UpsampleAdd,
            init_kwargs={"upsample": "nearest"},
            input_shape=((2, 4, 4, 8), (2, 8, 8, 8)),
            expected_output_shape=(2, 8, 8, 8),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
            supports_masking=False,
            run_training_check=True,
            run_mixed_precision_check=True,
        )

    def test_upsample_add_bilinear_odd_size(self):
        self.run_layer_test(
            UpsampleAdd,
            init_kwargs={"upsample": "bilinear"},
            input_shape=((2, 4, 4, 8), (2, 7, 7, 8)),
            expected_output_shape=(2, 7, 7, 8),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
            supports_masking=False,
            run_training_check=True,
            run_mixed_precision_check=True,
        )

    def test_channel_shuffle(self):
        self.run_layer_test(
            ChannelShuffle,
            init_kwargs={"groups": 2},
            input_shape=(2, 8, 8, 16),
            expected_output_shape=(2, 8, 8, 16),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
            supports_masking=False,
            run_training_check=True,
            run_mixed_precision_check=True,
        )

    def test_min_image_size(self):
        self.run_layer_test(
            MinImageSize,
            init_kwargs={"size": 8},
            input_shape=(2, 8, 8, 3),
            expected_output_shape=(2, 8, 8, 3),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
            supports_masking=False,
            run_training_check=True,
            run_mixed_precision_check=True,
        )

    def test_min_frames(self):
        self.run_layer_test(
            MinFrames,
            init_kwargs={"frames": 6},
            input_shape=(2, 8, 6, 3),
            expected_output_shape=(2, 8, 6, 3),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
            supports_masking=False,
            run_training_check=True,
            run_mixed_precision_check=True,
        )

    def test_frequency_upsample(self):
        self.run_layer_test(
            FrequencyUpsample,
            init_kwargs={"factor": 2},
            input_shape=(2, 4, 6, 8),
            expected_output_shape=(2, 8, 6, 8),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
            supports_masking=False,
            run_training_check=True,
            run_mixed_precision_check=True,
        )

    # Slimmable layers at their largest width (the harness builds them at full width). BN
    # runs in training mode: in inference an uncalibrated slimmable BN raises by design.
    def test_slimmable_conv2d(self):
        self.run_layer_test(
            SlimmableConv2D,
            init_kwargs={"filters": 16, "kernel_size": 3, "padding": "same", "strides": 2,
                         "use_bias": True, "width_range": (0.5, 1.0)},
            input_shape=(2, 8, 8, 8),
            expected_output_shape=(2, 4, 4, 16),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=0,
            supports_masking=False,
            run_training_check=True,
            run_mixed_precision_check=True,
        )

    def test_slimmable_depthwise_conv2d(self):
        self.run_layer_test(
            SlimmableDepthwiseConv2D,
            init_kwargs={"kernel_size": 3, "padding": "valid", "width_range": (0.5, 1.0)},
            input_shape=(2, 8, 8, 8),
            expected_output_shape=(2, 6, 6, 8),
            expected_num_trainable_weights=1,
            expected_num_non_trainable_weights=0,
            supports_masking=False,
            run_training_check=True,
            run_mixed_precision_check=True,
        )

    def test_slimmable_dense(self):
        self.run_layer_test(
            SlimmableDense,
            init_kwargs={"units": 16, "slim_out": True, "activation": "relu",
                         "width_range": (0.5, 1.0)},
            input_shape=(2, 8),
            expected_output_shape=(2, 16),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=0,
            supports_masking=False,
            run_training_check=True,
            run_mixed_precision_check=True,
        )

    def test_slimmable_batch_normalization(self):
        self.run_layer_test(
            SlimmableBatchNormalization,
            init_kwargs={"width_range": (0.5, 1.0)},
            input_shape=(2, 4, 4, 8),
            call_kwargs={"training": True},
            expected_output_shape=(2, 4, 4, 8),
            expected_num_trainable_weights=BN_TRAINABLE,
            expected_num_non_trainable_weights=BN_NON_TRAINABLE,
            supports_masking=False,
            run_training_check=True,
            run_mixed_precision_check=True,
        )
