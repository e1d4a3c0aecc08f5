"""Figures published in the Big-Little Net paper (Chen et al., ICLR 2019), to print beside ours.

FLOPs in the paper are multiply-accumulates (MACs), counted over conv and FC layers; Table 3's
speech FLOPs are MACs at 64x49 including the 32k-class output layer.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class PaperFigure:
    mparams: float  # the paper's "Params (10^6)"
    gmacs: float | None  # the paper's "FLOPs (10^9)" at 224
    gmacs_256: float | None = None  # the paper's "@256" FLOPs, where it gives them
    baseline: str | None = None  # label of the model the saving is measured against
    source: str = ""  # table of the paper


def _bl(mparams, gmacs, gmacs_256, baseline, source="Table 2"):
    return PaperFigure(mparams, gmacs, gmacs_256, baseline, source)


# Keyed by the labels of `bl_keras.benchmark.PAPER_MODELS`.
PAPER = {
    "resnet50": PaperFigure(25.55, 4.09, source="Table 1"),
    "bl_resnet50 (a=2, b=4)": _bl(26.69, 2.85, None, "resnet50", "Table 1"),
    "bl_resnet50 (a=2, b=2)": _bl(26.97, 2.91, None, "resnet50", "Table 1"),
    "bl_resnet50 (a=4, b=2)": _bl(26.31, 2.49, None, "resnet50", "Table 1"),
    "bl_resnet50 (a=4, b=4)": _bl(26.24, 2.48, None, "resnet50", "Table 1"),
    "resnet101": PaperFigure(44.54, 7.80, source="Table 2"),
    "bl_resnet101 (a=2, b=4)": _bl(41.85, 3.89, 5.08, "resnet101"),
    "resnet152": PaperFigure(60.19, 11.51, source="Table 2"),
    "bl_resnet152 (a=2, b=4)": _bl(57.36, 5.04, 6.58, "resnet152"),
    "resnext50_32x4d": PaperFigure(25.03, 4.23, source="Table 2"),
    "bl_resnext50_32x4d (a=2, b=4)": _bl(26.19, 3.03, 3.95, "resnext50_32x4d"),
    "resnext101_32x4d": PaperFigure(44.17, 7.97, source="Table 2"),
    "bl_resnext101_32x4d (a=2, b=4)": _bl(41.51, 4.08, 5.33, "resnext101_32x4d"),
    "resnext101_64x4d": PaperFigure(83.46, 15.46, source="Table 2"),
    "bl_resnext101_64x4d (a=2, b=4)": _bl(77.36, 7.14, 9.32, "resnext101_64x4d"),
    "seresnext50_32x4d": PaperFigure(27.56, 4.23, source="Table 2"),
    "bl_seresnext50_32x4d (a=2, b=4)": _bl(28.77, 3.03, 3.95, "seresnext50_32x4d"),
    "seresnext101_32x4d": PaperFigure(48.96, 7.97, source="Table 2"),
    "bl_seresnext101_32x4d (a=2, b=4)": _bl(45.88, 4.08, 5.33, "seresnext101_32x4d"),
    # Table 9: baselines at 224, bL-ShuffleNetV2 only at 256 ("@256").
    "shufflenet_v2 1x": PaperFigure(2.30, 0.146, source="Table 9"),
    "shufflenet_v2 1.5x": PaperFigure(3.51, 0.299, source="Table 9"),
    "shufflenet_v2 2x": PaperFigure(7.40, 0.588, source="Table 9"),
    "bl_shufflenet_v2 1x (a=2, b=2)": _bl(2.33, None, 0.150, "shufflenet_v2 1x", "Table 9"),
    "bl_shufflenet_v2 1.5x (a=2, b=2)": _bl(4.80, None, 0.298, "shufflenet_v2 1.5x", "Table 9"),
    "bl_shufflenet_v2 2x (a=2, b=2)": _bl(7.60, None, 0.590, "shufflenet_v2 2x", "Table 9"),
}


@dataclasses.dataclass(frozen=True)
class SpeechFigure:
    """One line of Table 3 (speech acoustic models on 64x49 log-mel inputs)."""

    line: int  # line of Table 3
    gflops: float  # "FLOPs (10^9)": MACs including the 32k output layer
    mparams: float  # "Params (10^6)": not reproducible (see `bl_keras.models.speech`)
    saving: float | None = None  # the saving Table 3 prints beside the FLOPs, e.g. "(1.63x)"


# Table 3, keyed by the labels of `bl_keras.benchmark.SPEECH_MODELS`; line 1 is the baseline.
SPEECH = {
    "resnet22_speech": SpeechFigure(1, 1.11, 3.02),
    "bl_resnet22_speech (a=4, b=1)": SpeechFigure(2, 0.68, 3.15, 1.63),
    "bl_resnet22_speech (a=4, b=2)": SpeechFigure(3, 0.66, 3.11, 1.68),
    "bl_resnet22_speech (a=4, b=3)": SpeechFigure(4, 0.65, 3.10, 1.70),
    "bl_resnet22_speech (a=2, b=3)": SpeechFigure(5, 0.77, 3.07, 1.43),
    "bl_resnet22_speech (a=4, b=1) cat": SpeechFigure(6, 0.70, 3.18, 1.58),
    "bl_pyr_resnet22_speech (a=4, b=1)": SpeechFigure(7, 0.98, 3.32, 1.13),
}
