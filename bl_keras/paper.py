"""Figures published in the Big-Little Net paper (Chen et al., ICLR 2019), to print beside ours.

FLOPs in the paper are multiply-accumulates (MACs), counted over conv and FC layers.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class PaperFigure:
    gmacs: float  # the paper's "FLOPs (10^9)" at `size`
    mparams: float  # the paper's "Params (10^6)"
    gmacs_256: float | None = None  # the paper's "@256" FLOPs, where Table 2 gives them
    baseline: str | None = None  # model the saving is measured against
    source: str = ""  # table of the paper


PAPER = {
    ("resnet50", ()): PaperFigure(4.09, 25.55, source="Table 1"),
    ("bl_resnet50", (2, 4)): PaperFigure(2.85, 26.69, baseline="resnet50", source="Table 1"),
    ("bl_resnet50", (2, 2)): PaperFigure(2.91, 26.97, baseline="resnet50", source="Table 1"),
    ("bl_resnet50", (4, 2)): PaperFigure(2.49, 26.31, baseline="resnet50", source="Table 1"),
    ("bl_resnet50", (4, 4)): PaperFigure(2.48, 26.24, baseline="resnet50", source="Table 1"),
    ("resnet101", ()): PaperFigure(7.80, 44.54, source="Table 2"),
    ("bl_resnet101", (2, 4)): PaperFigure(
        3.89, 41.85, gmacs_256=5.08, baseline="resnet101", source="Table 2"
    ),
    ("resnet152", ()): PaperFigure(11.51, 60.19, source="Table 2"),
    ("bl_resnet152", (2, 4)): PaperFigure(
        5.04, 57.36, gmacs_256=6.58, baseline="resnet152", source="Table 2"
    ),
    ("resnext50_32x4d", ()): PaperFigure(4.23, 25.03, source="Table 2"),
    ("bl_resnext50_32x4d", (2, 4)): PaperFigure(
        3.03, 26.19, gmacs_256=3.95, baseline="resnext50_32x4d", source="Table 2"
    ),
    ("resnext101_32x4d", ()): PaperFigure(7.97, 44.17, source="Table 2"),
    ("bl_resnext101_32x4d", (2, 4)): PaperFigure(
        4.08, 41.51, gmacs_256=5.33, baseline="resnext101_32x4d", source="Table 2"
    ),
    ("resnext101_64x4d", ()): PaperFigure(15.46, 83.46, source="Table 2"),
    ("bl_resnext101_64x4d", (2, 4)): PaperFigure(
        7.14, 77.36, gmacs_256=9.32, baseline="resnext101_64x4d", source="Table 2"
    ),
    ("seresnext50_32x4d", ()): PaperFigure(4.23, 27.56, source="Table 2"),
    ("bl_seresnext50_32x4d", (2, 4)): PaperFigure(
        3.03, 28.77, gmacs_256=3.95, baseline="seresnext50_32x4d", source="Table 2"
    ),
    ("seresnext101_32x4d", ()): PaperFigure(7.97, 48.96, source="Table 2"),
    ("bl_seresnext101_32x4d", (2, 4)): PaperFigure(
        4.08, 45.88, gmacs_256=5.33, baseline="seresnext101_32x4d", source="Table 2"
    ),
}


def figure(name, alpha=None, beta=None):
    """The paper's figure for a model (and alpha, beta for Big-Little models), or None."""
    key = (name, (alpha, beta) if alpha is not None else ())
    return PAPER.get(key)
