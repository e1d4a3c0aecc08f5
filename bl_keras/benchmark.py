"""Complexity and speed reports: our models beside the paper's figures, and measured speedups."""

import dataclasses
import textwrap

from tqdm.auto import tqdm

from bl_keras import models, paper, profile, timing
from bl_keras.multires import EXAMPLE_SCALE, example_mixing  # noqa: F401  (also public here)


def paper_entry(name, alpha=None, beta=None, width=None, merge=None):
    """(label, builder name, builder kwargs) of one model of the paper."""
    kwargs = {}
    label = name
    if width is not None:
        kwargs["width_multiplier"] = width
        label += f" {width:g}x"
    if alpha is not None:
        kwargs.update(alpha=alpha, beta=beta)
        label += f" (a={alpha}, b={beta})"
    if merge == "concat":
        kwargs["merge"] = merge
        label += " cat"
    return label, name, kwargs


# The paper's models, baselines first so that savings can be computed.
PAPER_MODELS = (
    paper_entry("resnet50"),
    paper_entry("bl_resnet50", 2, 4),
    paper_entry("bl_resnet50", 2, 2),
    paper_entry("bl_resnet50", 4, 2),
    paper_entry("bl_resnet50", 4, 4),
    paper_entry("resnet101"),
    paper_entry("bl_resnet101", 2, 4),
    paper_entry("resnet152"),
    paper_entry("bl_resnet152", 2, 4),
    paper_entry("resnext50_32x4d"),
    paper_entry("bl_resnext50_32x4d", 2, 4),
    paper_entry("resnext101_32x4d"),
    paper_entry("bl_resnext101_32x4d", 2, 4),
    paper_entry("resnext101_64x4d"),
    paper_entry("bl_resnext101_64x4d", 2, 4),
    paper_entry("seresnext50_32x4d"),
    paper_entry("bl_seresnext50_32x4d", 2, 4),
    paper_entry("seresnext101_32x4d"),
    paper_entry("bl_seresnext101_32x4d", 2, 4),
    *(paper_entry("shufflenet_v2", width=w) for w in (1.0, 1.5, 2.0)),
    *(paper_entry("bl_shufflenet_v2", 2, 2, width=w) for w in (1.0, 1.5, 2.0)),
)


@dataclasses.dataclass(frozen=True)
class ComplexityRow:
    label: str
    params: int
    macs_224: int
    macs_256: int
    saving: float | None  # baseline MACs at 224 / ours at the paper's size for this model
    paper: paper.PaperFigure | None
    paper_saving: float | None


def complexity_rows(entries=PAPER_MODELS, progress=True):
    """Params and MACs of each (label, name, kwargs), with savings against the baseline.

    A model the paper reports only at 256 (bL-ShuffleNetV2@256) is compared at 256 with its
    baseline at 224, as the paper does."""
    rows = {}
    for label, name, kwargs in tqdm(entries, desc="building", disable=not progress,
                                    leave=False):
        model = models.get(name, **kwargs)
        params = profile.count_params(model)
        macs_224, macs_256 = profile.count_macs(model, 224), profile.count_macs(model, 256)
        fig = paper.PAPER.get(label)
        saving = paper_saving = None
        if fig is not None and fig.baseline in rows:
            at_256 = fig.gmacs is None
            ours = macs_256 if at_256 else macs_224
            saving = rows[fig.baseline].macs_224 / ours
            base_fig = paper.PAPER[fig.baseline]
            paper_saving = base_fig.gmacs / (fig.gmacs_256 if at_256 else fig.gmacs)
        rows[label] = ComplexityRow(label, params, macs_224, macs_256, saving, fig,
                                    paper_saving)
        del model
    return list(rows.values())


def _g(value):
    return "" if value is None else f"{value:g}"


def _x(value):
    return "" if value is None else f"{value:.2f}x"


def complexity_table(rows):
    headers = ["model", "params (M)", "paper", "GMACs@224", "paper", "GMACs@256", "paper",
               "saving", "paper saving"]
    body = [
        [
            r.label,
            f"{r.params / 1e6:.2f}",
            "" if r.paper is None else f"{r.paper.mparams:.2f}",
            f"{r.macs_224 / 1e9:.3f}",
            _g(r.paper and r.paper.gmacs),
            f"{r.macs_256 / 1e9:.3f}",
            _g(r.paper and r.paper.gmacs_256),
            _x(r.saving),
            _x(r.paper_saving),
        ]
        for r in rows
    ]
    return format_table(headers, body)


# Table 3's speech models (paper.SPEECH), the baseline first.
SPEECH_MODELS = (
    paper_entry("resnet22_speech"),
    paper_entry("bl_resnet22_speech", 4, 1),
    paper_entry("bl_resnet22_speech", 4, 2),
    paper_entry("bl_resnet22_speech", 4, 3),
    paper_entry("bl_resnet22_speech", 2, 3),
    paper_entry("bl_resnet22_speech", 4, 1, merge="concat"),
    paper_entry("bl_pyr_resnet22_speech", 4, 1),
)
SPEECH_INPUT = (64, 49, 3)  # Appendix B.1: 64 log-mel bins x 49 frames x 3 (with deltas)

SPEECH_CONVENTION = (
    "Counting convention: Table 3's FLOPs are MACs (conv layers) of one 64x49 input window "
    "(one output frame), including the 1x1 output layer to 32k classes ({out_macs:.1f}M MACs): "
    "our {label} gives {macs:.3f}G against the paper's {paper:.2f}G, and {macs_no_output:.3f}G "
    "without that layer. Table 3's params (3.0-3.3M) are not reproducible (the 3x3 convs of the "
    "512-wide stage alone hold 8.3M weights, the 32k output layer {out_params:.1f}M); ours are "
    "printed for reference. Savings are {label}'s MACs / the model's."
)
"""Formatted with the baseline's row (the first of `speech_complexity_rows`)."""


@dataclasses.dataclass(frozen=True)
class SpeechComplexityRow:
    label: str
    params: int  # with the 32k output layer
    params_no_output: int
    macs: int  # at 64x49, with the 32k output layer (the paper's convention)
    macs_no_output: int
    saving: float  # baseline MACs / ours, both with the output layer
    saving_no_output: float
    paper: paper.SpeechFigure | None


def speech_complexity_rows(entries=SPEECH_MODELS, progress=True):
    """Params and MACs at 64x49 of Table 3's speech models (the 32k-class output layer built and
    counted, then also subtracted), with savings against the first entry (the baseline)."""
    rows = []
    for label, name, kwargs in tqdm(entries, desc="building", disable=not progress,
                                    leave=False):
        model = models.get(name, input_shape=SPEECH_INPUT, **kwargs)
        records = profile.mac_table(model)
        macs = sum(r.macs for r in records if r.macs)
        out_macs = sum(r.macs for r in records if r.path.split("/")[-1] == "output_conv")
        params = profile.count_params(model)
        out_params = profile.count_params(model.get_layer("output_conv"))
        base = rows[0] if rows else None
        rows.append(SpeechComplexityRow(
            label, params, params - out_params, macs, macs - out_macs,
            base.macs / macs if base else 1.0,
            base.macs_no_output / (macs - out_macs) if base else 1.0,
            paper.SPEECH.get(label),
        ))
        del model
    return rows


def speech_complexity_table(rows):
    """The convention, then a Markdown table of `speech_complexity_rows` beside Table 3."""
    headers = ["line", "model", "GMACs", "paper GFLOPs", "saving", "paper saving",
               "GMACs w/o output", "saving w/o output", "params (M)", "w/o output",
               "paper params (M)"]
    body = [
        [
            "" if r.paper is None else str(r.paper.line),
            r.label,
            f"{r.macs / 1e9:.3f}",
            "" if r.paper is None else f"{r.paper.gflops:.2f}",
            _x(r.saving),
            _x(r.paper and (r.paper.saving or 1.0)),
            f"{r.macs_no_output / 1e9:.3f}",
            _x(r.saving_no_output),
            f"{r.params / 1e6:.2f}",
            f"{r.params_no_output / 1e6:.2f}",
            "" if r.paper is None else f"{r.paper.mparams:.2f}",
        ]
        for r in rows
    ]
    base = rows[0]
    convention = SPEECH_CONVENTION.format(
        label=base.label, macs=base.macs / 1e9, macs_no_output=base.macs_no_output / 1e9,
        out_macs=(base.macs - base.macs_no_output) / 1e6, paper=base.paper.gflops,
        out_params=(base.params - base.params_no_output) / 1e6)
    return textwrap.fill(convention, 100) + "\n\n" + format_table(headers, body)


@dataclasses.dataclass(frozen=True)
class SpeedSummary:
    baseline: str
    model: str
    mac_ratio: float
    throughput: tuple  # (baseline Timing, model Timing) at the throughput batch, best runtimes
    latency: tuple  # same at batch 1

    @property
    def throughput_speedup(self):
        return self.throughput[0].seconds / self.throughput[1].seconds

    @property
    def latency_speedup(self):
        return self.latency[0].seconds / self.latency[1].seconds


OFFICIAL = "official"  # the name of the official model's timings


def speed_comparison(baseline="resnet50", model="bl_resnet50", size=224, batch=16,
                     runtimes=timing.RUNTIMES, repeats=10, latency_repeats=50, progress=True,
                     official=None):
    """Times `model` against `baseline` on every runtime at `batch` and at batch 1, in one run;
    `official` (a `timing.External`, e.g. `bl_keras.official.external`) is timed with them on
    its own runtime, under the name `OFFICIAL`."""
    built = {name: models.get(name, input_shape=(size, size, 3)) for name in (baseline, model)}
    mac_ratio = profile.count_macs(built[baseline]) / profile.count_macs(built[model])
    timed = dict(built) if official is None else {**built, OFFICIAL: official}
    timings = timing.measure(timed, runtimes=runtimes, batches=(batch, 1), repeats=repeats,
                             latency_repeats=latency_repeats, progress=progress)
    summary = SpeedSummary(
        baseline,
        model,
        mac_ratio,
        (timing.best(timings, baseline, batch), timing.best(timings, model, batch)),
        (timing.best(timings, baseline, 1), timing.best(timings, model, 1)),
    )
    return timings, summary


def official_table(timings, model, batch):
    """Our `model` on its best runtime against the official model's timings (`OFFICIAL`), at
    `batch` (images/s) and at batch 1 (ms); a ratio >= 1.00x means ours is as fast or faster."""
    rows = []
    for size, unit in ((batch, "img/s"), (1, "ms")):
        theirs = timing.best(timings, OFFICIAL, size)
        ours = timing.best(timings, model, size)
        ours_onnx = [t for t in timings if t.model == model and t.batch == size
                     and t.runtime == theirs.runtime]
        value = (lambda t: f"{t.images_per_second:.1f}") if unit == "img/s" else (
            lambda t: f"{t.seconds * 1e3:.1f}")
        rows.append([
            f"{'throughput' if unit == 'img/s' else 'latency'}, batch {size} ({unit})",
            f"{value(theirs)} ({theirs.runtime})",
            f"{value(ours_onnx[0])}" if ours_onnx else "-",
            f"{value(ours)} ({ours.runtime})",
            f"{theirs.seconds / ours.seconds:.2f}x",
        ])
    headers = ["official PyTorch model vs ours", f"official {model}", f"ours, {theirs.runtime}",
               "ours, best runtime", "ours faster by"]
    return format_table(headers, rows)


def timings_table(timings, baseline, model):
    by_key = {(t.model, t.runtime, t.batch): t for t in timings}
    rows = []
    for runtime in dict.fromkeys(t.runtime for t in timings if t.model == baseline):
        for batch in dict.fromkeys(t.batch for t in timings):
            base, ours = by_key[baseline, runtime, batch], by_key[model, runtime, batch]
            rows.append([
                runtime,
                str(batch),
                f"{base.seconds * 1e3:.1f}",
                f"{ours.seconds * 1e3:.1f}",
                f"{base.images_per_second:.1f}",
                f"{ours.images_per_second:.1f}",
                f"{base.seconds / ours.seconds:.2f}x",
            ])
    headers = ["runtime", "batch", f"{baseline} ms", f"{model} ms", f"{baseline} img/s",
               f"{model} img/s", "speedup"]
    return format_table(headers, rows)


def summary_table(s):
    batch = s.throughput[0].batch
    rows = [
        [f"throughput, batch {batch} (img/s)",
         f"{s.throughput[0].images_per_second:.1f} ({s.throughput[0].runtime})",
         f"{s.throughput[1].images_per_second:.1f} ({s.throughput[1].runtime})",
         f"{s.throughput_speedup:.2f}x", f"{s.throughput_speedup / s.mac_ratio:.0%}"],
        ["latency, batch 1 (ms)",
         f"{s.latency[0].seconds * 1e3:.1f} ({s.latency[0].runtime})",
         f"{s.latency[1].seconds * 1e3:.1f} ({s.latency[1].runtime})",
         f"{s.latency_speedup:.2f}x", f"{s.latency_speedup / s.mac_ratio:.0%}"],
    ]
    headers = ["best runtime of each", s.baseline, s.model, "speedup",
               f"of MAC ratio {s.mac_ratio:.2f}x"]
    return format_table(headers, rows)


def format_table(headers, rows):
    """A Markdown table, columns padded so it also reads well in a terminal."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |"
             for line in [headers, *rows]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# Seed 002 (multi-resolution convolution): Tables 1 and 4 on CIFAR-10 at 32x32. The paper's
# "MFLOPS" column holds GMACs (see the reference README). Its figures live here, beside the rows.
MULTIRES_SIZE = 32
NOT_FROM_ARCHITECTURE = "paper's figure not reproducible from the architecture"
DEPENDS_ON_WEIGHTS = "depends on the learned weights"


@dataclasses.dataclass(frozen=True)
class MultiresEntry:
    label: str  # the paper's row
    model: str | None  # our builder name (None: a pruned example, see `prune`)
    paper_accuracy: float | None
    paper_gmacs: float
    paper_params: str | None = None  # Table 4's "Params"
    paper_error: float | None = None  # Table 4's "Error"
    prune: dict | None = None  # `bl_keras.multires.prune` kwargs applied to an example model
    note: str = ""


MULTIRES_TABLE1 = (
    MultiresEntry("No Pooling", "multires_10x64_nopool", 87.3, 0.31),
    MultiresEntry("Predefined Pooling", "multires_10x64_predefined", 90.0, 0.26,
                  note=f"{NOT_FROM_ARCHITECTURE} (Fig. 3(a) not given); ours: levels "
                       "0,0,0,1,1,1,2,2,3,3"),
    MultiresEntry("Scale Invariant", "multires_10x64_uniform", 89.2, 0.41),
    MultiresEntry("Our Model", "multires_10x64", 92.5, 0.41),
    MultiresEntry("Our Model (thr 0.1)", None, 92.5, 0.29, prune={"threshold": 0.1},
                  note=f"{DEPENDS_ON_WEIGHTS}; ours: example mixing"),
    MultiresEntry("Our Model (thr 0.2)", None, 92.3, 0.27, prune={"threshold": 0.2},
                  note=f"{DEPENDS_ON_WEIGHTS}; ours: example mixing"),
    MultiresEntry("Our Model (one res.)", None, 91.1, 0.26, prune={"keep_best": True},
                  note=f"{DEPENDS_ON_WEIGHTS}; ours: example mixing"),
)

MULTIRES_TABLE4 = (
    MultiresEntry("Conv 64x10", "multires_10x64", None, 0.41, "0.3M", 7.5),
    MultiresEntry("Conv 128x8", "multires_8x128", None, 1.23, "0.9M", 8.8),
    MultiresEntry("Eff-Conv 128x8", "multires_eff_8x128", None, 1.69, "1.5M", 7.0),
)

MULTIRES_EXAMPLE = (
    "Example mixing of the pruned rows: multires_10x64 with logits -{scale:g} x |r - p_l|, "
    "peaked at level p_l = round(3 (l - 1) / 9) of layer l (a fine-to-coarse diagonal like "
    "Fig. 3(b)); the paper's rows depend on its trained weights, which are not published.")

@dataclasses.dataclass(frozen=True)
class MultiresRow:
    entry: MultiresEntry
    model: str
    params: int
    macs: int


def multires_rows(entries, size=MULTIRES_SIZE, progress=True):
    """Our params and MACs at `size` for each `MultiresEntry` (pruned entries: the pruned
    `example_mixing` multires_10x64)."""
    from bl_keras import multires

    rows, example = [], None
    for entry in tqdm(entries, desc="building", disable=not progress, leave=False):
        if entry.prune is None:
            model = models.get(entry.model, input_shape=(size, size, 3))
            name = entry.model
        else:
            if example is None:
                example = example_mixing(models.get("multires_10x64",
                                                    input_shape=(size, size, 3)))
            model = multires.prune(example, **entry.prune)
            name = "prune(multires_10x64, " + ", ".join(
                f"{k}={v}" for k, v in entry.prune.items()) + ")"
        rows.append(MultiresRow(entry, name, profile.count_params(model),
                                profile.count_macs(model, (size, size, 3))))
        del model
    return rows


def multires_table1(rows):
    """Table 1 (CIFAR-10, 10 layers x 64): our GMACs beside the paper's (accuracy: the paper's;
    ours come from `benchmarks/multires.py`)."""
    headers = ["Table 1 row", "our model", "params", "GMACs@32", "paper GMACs ('MFLOPS')",
               "paper acc.", "note"]
    body = [[r.entry.label, r.model, f"{r.params:,}", f"{r.macs / 1e9:.3f}",
             f"{r.entry.paper_gmacs:.2f}", f"{r.entry.paper_accuracy:.1f}", r.entry.note]
            for r in rows]
    return format_table(headers, body)


def multires_table4(rows):
    """Table 4 (ours vs the paper's multi-resolution models beside FabricNet)."""
    headers = ["Table 4 row", "our model", "params", "paper params", "GMACs@32",
               "paper GMACs ('MFLOPS')", "paper error"]
    body = [[r.entry.label, r.model, f"{r.params:,}", r.entry.paper_params,
             f"{r.macs / 1e9:.3f}", f"{r.entry.paper_gmacs:.2f}", f"{r.entry.paper_error:.1f}"]
            for r in rows]
    return format_table(headers, body)


# Seed 003 (MutualNet): the US-MobileNets at the paper's widths and resolutions (Figs. 4-6).
SLIMMABLE_CONFIGS = (("us_mobilenet_v1", (0.25, 0.5, 0.75, 1.0)),
                     ("us_mobilenet_v2", (0.35, 0.5, 0.75, 1.0)))
SLIMMABLE_RESOLUTIONS = (224, 192, 160, 128)
PAPER_MFLOPS_RANGE = (13, 569)  # section 1 / Fig. 2: V1 0.25x128 to 1.0x224


@dataclasses.dataclass(frozen=True)
class SlimmableRow:
    model: str
    width: float
    resolution: int
    params: int  # of the sub-network at that width
    macs: int  # conv and dense MACs (our convention)
    profiler_macs: int  # the official profiler's: also the pooled tensor C x H x W


def slimmable_rows(configs=SLIMMABLE_CONFIGS, resolutions=SLIMMABLE_RESOLUTIONS,
                   progress=True):
    """Params and MACs of every (width, resolution) sub-network of the US-MobileNets, with
    the official profiler's figure (which adds the global pool's C x H x W)."""
    import numpy as np

    from bl_keras import slimmable

    rows = []
    for name, widths in configs:
        model = models.get(name)
        features = _pooled_input(model)
        for width in tqdm(widths, desc=name, disable=not progress, leave=False):
            # Counting needs no trained statistics: any batch makes subnetwork() possible.
            slimmable.calibrate_batch_norm(model, [np.zeros((2, 32, 32, 3), "float32")],
                                           width=width)
            sub = slimmable.subnetwork(model, width)
            params = profile.count_params(sub)
            for size in resolutions:
                macs = profile.count_macs(sub, (size, size, 3))
                pooled = features(np.zeros((1, size, size, 3), "float32"), training=True)
                rows.append(SlimmableRow(name, width, size, params, macs,
                                         macs + int(np.prod(pooled.shape[1:]))))
        del model
    return rows


def _pooled_input(model):
    import keras

    return keras.Model(model.input, model.get_layer("avg_pool").input)


def slimmable_table(rows):
    """The US-MobileNets' params and MMACs per width and resolution, ours and the official
    profiler's, and the range the paper quotes."""
    headers = ["model", "width", "resolution", "params", "MMACs", "official profiler MMACs"]
    body = [[r.model, f"{r.width:g}", str(r.resolution), f"{r.params:,}", f"{r.macs / 1e6:.2f}",
             f"{r.profiler_macs / 1e6:.2f}"] for r in rows]
    return format_table(headers, body)


def slimmable_range(rows, model="us_mobilenet_v1"):
    """One line: the paper's MFLOPs range beside ours (min and max over `model`'s rows)."""
    mine = [r for r in rows if r.model == model]
    low, high = min(mine, key=lambda r: r.macs), max(mine, key=lambda r: r.macs)
    return (f"{model} from {low.width:g}x{low.resolution} to {high.width:g}x{high.resolution}: "
            f"paper {PAPER_MFLOPS_RANGE[0]} to {PAPER_MFLOPS_RANGE[1]} MFLOPs; ours "
            f"{low.macs / 1e6:.2f} to {high.macs / 1e6:.2f} MMACs (conv and dense), "
            f"{low.profiler_macs / 1e6:.2f} to {high.profiler_macs / 1e6:.2f} by the official "
            "profiler, which also counts the pooled tensor")
