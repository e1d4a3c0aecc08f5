"""MutualNet's query table of a trained slimmable model (seed 003, section 3.2): top-1, MACs,
parameters and TFLite batch-1 latency of every width-resolution configuration.

    python -m apps.query_table --model_path=runs/us/model.keras --dataset=imagenet \
        --data_dir=/data/imagenet --split=val --widths=0.25:1.0:0.05 \
        --resolutions=224,192,160,128 --output=runs/us/table.json
    python -m apps.query_table --model_path=M.keras --dataset=digits --widths=0.25,0.5,1.0 \
        --resolutions=32,24 --nolatency --max_mmacs=5 --output=table.json

Each configuration's BatchNorm statistics come from --num_calibration_images training images
(train split, training augmentation) at its resolution; top-1 is measured on --split (a held-out
split: "val" by default). Prints the table and the best configuration under --max_mmacs /
--max_latency_ms; --output writes the JSON (`rows` plus the run's settings), a CSV and a PNG of
top-1 against MACs (Fig. 5 of the paper) beside it, with the same stem.
"""

import csv
import json
import os

import keras
from absl import app, flags

from bl_keras import benchmark, plots, slimmable
from bl_keras import query_table as qt

FLAGS = flags.FLAGS
flags.DEFINE_string("model_path", None, "A trained slimmable .keras model.")
flags.DEFINE_string("dataset", "digits", "Data set spec of pipelines.get_dataset (digits, "
                    "cifar10, cifar100, imagenet, folder:PATH, tfrecord:GLOB).")
flags.DEFINE_string("data_dir", None, "Where the data set is prepared.")
flags.DEFINE_string("split", "val", "Held-out split the configurations are compared on.")
flags.DEFINE_string("widths", None, "'MIN:MAX:STEP' or a list '0.25,0.5,1.0' (default: the "
                    "model's range in 0.05 steps).")
flags.DEFINE_list("resolutions", ["224", "192", "160", "128"], "Square input sizes.")
flags.DEFINE_bool("latency", True, "Measure batch-1 float32 TFLite latency on this machine "
                  "(--nolatency: skip, much faster).")
flags.DEFINE_integer("latency_repeats", 30, "Timed runs per configuration (median).")
flags.DEFINE_integer("batch_size", 64, "Batch size of calibration and evaluation.")
flags.DEFINE_integer("num_calibration_images", slimmable.DEFAULT_CALIBRATION_IMAGES,
                     "Training images for each configuration's BatchNorm statistics.")
flags.DEFINE_float("max_mmacs", None, "Print the best configuration within this many MMACs.")
flags.DEFINE_float("max_latency_ms", None, "Print the best configuration within this latency.")
flags.DEFINE_string("output", None, "JSON file to write (CSV and PNG beside it, same stem).")
flags.mark_flag_as_required("model_path")


def format_rows(rows):
    headers = ["width", "resolution", "MMACs", "params", "top-1 (%)", "latency (ms)"]
    body = [[f"{r['width']:g}", str(r["resolution"]), f"{r['macs'] / 1e6:.3f}",
             f"{r['params']:,}", f"{100 * r['top1']:.2f}",
             "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f}"] for r in rows]
    return benchmark.format_table(headers, body)


def write_outputs(report, path):
    """The JSON at `path`, the CSV and the PNG beside it; returns the three paths."""
    stem = os.path.splitext(path)[0]
    csv_path, png_path = stem + ".csv", stem + ".png"
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=qt.ROW_KEYS)
        writer.writeheader()
        writer.writerows(report["rows"])
    plots.query_table_curve(report["rows"], png_path,
                            title=f"{report['model']} on {report['dataset']} {report['split']}")
    return path, csv_path, png_path


def main(argv):
    del argv
    try:
        resolutions = [int(r) for r in FLAGS.resolutions]
    except ValueError:
        raise app.UsageError(f"--resolutions must be integers, got {FLAGS.resolutions}") from None
    model = keras.models.load_model(FLAGS.model_path, compile=False)
    try:
        if not slimmable.slimmable_layers(model):
            raise ValueError(f"{FLAGS.model_path} ({model.name!r}) has no slimmable layers: a "
                             "query table needs a slimmable model")
        widths = qt.check_widths(model, FLAGS.widths)
        resolutions = qt.check_resolutions(model, resolutions)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    rows = qt.query_table(model, FLAGS.dataset, widths, resolutions, split=FLAGS.split,
                          data_dir=FLAGS.data_dir, batch_size=FLAGS.batch_size,
                          num_calibration_images=FLAGS.num_calibration_images,
                          latency=FLAGS.latency, latency_repeats=FLAGS.latency_repeats)
    print(format_rows(rows))
    report = {"model_path": FLAGS.model_path, "model": model.name, "dataset": FLAGS.dataset,
              "split": FLAGS.split, "num_calibration_images": FLAGS.num_calibration_images,
              "latency_runtime": "tflite float32, batch 1" if FLAGS.latency else None,
              "rows": rows}
    if FLAGS.max_mmacs is not None or FLAGS.max_latency_ms is not None:
        max_macs = None if FLAGS.max_mmacs is None else FLAGS.max_mmacs * 1e6
        try:
            best = qt.best_config(rows, max_macs=max_macs, max_latency_ms=FLAGS.max_latency_ms)
        except ValueError as error:
            print(f"best configuration: none ({error})")
        else:
            report["best"] = {"max_macs": max_macs, "max_latency_ms": FLAGS.max_latency_ms,
                              "row": best}
            latency = "" if best["latency_ms"] is None else f", {best['latency_ms']:.3f} ms"
            print(f"best configuration: width {best['width']:g} at {best['resolution']}: "
                  f"top-1 {100 * best['top1']:.2f}%, {best['macs'] / 1e6:.3f} MMACs{latency}")
    if FLAGS.output:
        paths = write_outputs(report, FLAGS.output)
        print("wrote " + ", ".join(paths))


if __name__ == "__main__":
    app.run(main)
