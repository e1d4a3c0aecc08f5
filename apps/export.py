"""Exports a trained `.keras` model for deployment and checks the export against Keras.

    python -m apps.export --model_path=model.keras --output=model.tflite --format=tflite \
        --quantize=int8 [--dataset=digits --data_dir= --split=test --image_size=32 \
        --calibration_images=200 --parity_images=500]
    python -m apps.export --model_path=model.keras --output=served/ --format=saved_model
    python -m apps.export --model_path=model.keras --output=model.onnx --format=onnx

A SavedModel's default signature takes uint8 RGB images; a TFLite flatbuffer takes float32
images in [0, 255] (also when int8-quantized); an ONNX model takes float32 images in [0, 255]
(input "images", dynamic batch, output "output_0"), checked in ONNX Runtime. int8 calibration
images come from the `train` split of `--dataset`; the parity check runs on `--split` (held out)
and prints the largest absolute output difference and the top-1 agreement with the Keras model.

A slimmable model (MutualNet) exports one width-resolution configuration: its BatchNorm
statistics are calibrated on --num_calibration_images `train` images of `--dataset` at
--resolution, and `subnetwork(model, --width)` (ordinary layers) is exported and checked as
above. Several configurations (comma-separated --width and --resolution, paired in order; one
value of either applies to all) go into one SavedModel, one signature each
(`width_0_5_res_160`; the first is also serving_default), each checked:

    python -m apps.export --model_path=us.keras --output=us_0.5.tflite --width=0.5 \
        --resolution=160 --dataset=imagenet --data_dir=/data/imagenet --split=val
    python -m apps.export --model_path=us.keras --output=served/ --format=saved_model \
        --width=1.0,0.5 --resolution=224,160 --dataset=imagenet --data_dir=/data/imagenet

Speech acoustic models export the same way with float32 log-mel windows [64, frames, 3] as
inputs (SavedModel and TFLite alike), calibrated and checked on `--dataset=speech:PATH` or
`speech_commands` windows:

    python -m apps.export --model_path=runs/speech/model.keras --output=am.tflite \
        --dataset=speech:PATH --split=test [--num_frames=98]
"""

import os

import keras
from absl import app, flags, logging

import pipelines
from bl_keras import evaluation, export, slimmable
from bl_keras import query_table as qt

FLAGS = flags.FLAGS
flags.DEFINE_string("model_path", None, "Keras model to export (.keras).")
flags.DEFINE_string("output", None, "Where to write: a .tflite or .onnx file, or a SavedModel "
                    "directory.")
flags.DEFINE_enum("format", "tflite", ["saved_model", "tflite", "onnx"], "Export format.")
flags.DEFINE_enum("quantize", "none", ["none", "float16", "int8"],
                  "TFLite quantization: float32, float16 weights, or full int8.")
flags.DEFINE_string("dataset", "digits", "Data set spec of pipelines.get_dataset for the parity "
                    "check and int8 calibration.")
flags.DEFINE_string("data_dir", None, "Prepared data set copy (see pipelines.get_dataset).")
flags.DEFINE_string("split", "test", "Held-out split for the parity check.")
flags.DEFINE_integer("image_size", None, "Exported input size (default: the model's).")
flags.DEFINE_integer("num_frames", None, "Speech models: exported window length in frames "
                     "(default: the model's).")
flags.DEFINE_integer("calibration_images", 200, "int8 calibration images from the train split.")
flags.DEFINE_integer("parity_images", 500, "Held-out images for the parity check (0: none).")
flags.DEFINE_integer("batch_size", 32, "Batch size of the data and of the parity runs.")
flags.DEFINE_list("width", None, "Slimmable models: the width to export (several, "
                  "comma-separated: one SavedModel signature each).")
flags.DEFINE_list("resolution", None, "Slimmable models: the input size of each --width "
                  "(one value: all of them).")
flags.DEFINE_integer("num_calibration_images", slimmable.DEFAULT_CALIBRATION_IMAGES,
                     "Slimmable models: train images for the BatchNorm statistics of each "
                     "configuration (int8 uses --calibration_images).")
flags.mark_flags_as_required(["model_path", "output"])


def disk_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def configurations(model):
    """The (width, resolution) pairs of --width/--resolution for a slimmable model; None for
    any other model (which must not get them)."""
    widths, sizes = FLAGS.width or [], FLAGS.resolution or []
    if not slimmable.slimmable_layers(model):
        if widths or sizes:
            raise app.UsageError(f"--width/--resolution are for slimmable models; "
                                 f"{model.name!r} has no slimmable layers (use --image_size)")
        return None
    low, high = slimmable.width_range(model)
    if not widths or not sizes:
        raise app.UsageError(
            f"{model.name!r} is slimmable (widths {low:g} to {high:g}): pass --width and "
            "--resolution to choose the configuration to export (python -m apps.query_table "
            "compares them)")
    if FLAGS.image_size:
        raise app.UsageError("--image_size does not apply to a slimmable model: "
                             "--resolution sets the input size")
    try:
        widths = [float(w) for w in widths]
        sizes = [int(r) for r in sizes]
    except ValueError:
        raise app.UsageError(f"--width takes numbers and --resolution integers, got "
                             f"{FLAGS.width} and {FLAGS.resolution}") from None
    if len(sizes) == 1:
        sizes *= len(widths)
    if len(widths) == 1:
        widths *= len(sizes)
    if len(widths) != len(sizes):
        raise app.UsageError(f"--width and --resolution pair up in order: got {len(widths)} "
                             f"widths and {len(sizes)} resolutions")
    try:
        widths = [round(slimmable.check_width(model, w), 6) for w in widths]
        qt.check_resolutions(model, sorted(set(sizes)))
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    pairs = list(zip(widths, sizes))
    if len(set(pairs)) != len(pairs):
        raise app.UsageError(f"a configuration repeats in {pairs}")
    if len(pairs) > 1 and FLAGS.format != "saved_model":
        raise app.UsageError("several configurations go into one SavedModel "
                             "(--format=saved_model); a TFLite or ONNX file holds one")
    return pairs


def slimmable_subnetworks(model, pairs):
    """[(signature name, calibrated sub-network, resolution)] of each configuration."""
    found = []
    for width, size in pairs:
        batches = pipelines.get_dataset(FLAGS.dataset, "train", size, FLAGS.batch_size,
                                        training=True, data_dir=FLAGS.data_dir, seed=0)
        sub = qt.calibrated_subnetwork(model, width, size, batches,
                                       FLAGS.num_calibration_images)
        print(f"width {width:g} at {size}x{size}: BatchNorm calibrated on up to "
              f"{FLAGS.num_calibration_images} {FLAGS.dataset} train images")
        found.append((export.signature_name(width, size), sub, size))
    return found


def export_signatures(subnetworks):
    """Several configurations in one SavedModel, each signature checked."""
    export.export_saved_model_signatures(
        {name: (sub, size) for name, sub, size in subnetworks}, FLAGS.output)
    print(f"{len(subnetworks)} configurations -> saved_model {FLAGS.output}: "
          f"{disk_size(FLAGS.output):,} bytes, signatures "
          f"{', '.join(name for name, _, _ in subnetworks)}")
    if FLAGS.parity_images <= 0:
        return
    for name, sub, size in subnetworks:
        dataset, _ = evaluation.model_dataset(sub, FLAGS.dataset, FLAGS.split, FLAGS.batch_size,
                                              data_dir=FLAGS.data_dir, image_size=size)
        held_out = export.take_images(dataset, FLAGS.parity_images)
        result = export.parity(sub, FLAGS.output, held_out, batch_size=FLAGS.batch_size,
                               signature=name)
        print(f"{name}: parity against Keras on {result['count']} {FLAGS.dataset} "
              f"{FLAGS.split} images: max abs diff {result['max_abs_diff']:.6g}, top-1 "
              f"agreement {100 * result['top1_agreement']:.2f}%")


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TF's SavedModel-writing chatter

    if FLAGS.format != "tflite" and FLAGS.quantize != "none":
        raise app.UsageError("--quantize applies to --format=tflite only")
    model = keras.models.load_model(FLAGS.model_path)
    pairs = configurations(model)
    slim_size = None
    if pairs:
        subnetworks = slimmable_subnetworks(model, pairs)
        if len(subnetworks) > 1:
            export_signatures(subnetworks)
            return
        _, model, slim_size = subnetworks[0]
    speech = export.takes_features(model)
    if speech and FLAGS.image_size:
        raise app.UsageError("--image_size is for image models; pass --num_frames")
    if not speech and FLAGS.num_frames:
        raise app.UsageError("--num_frames is for speech models; pass --image_size")
    size = (model.input_shape[1], FLAGS.num_frames) if speech and FLAGS.num_frames else (
        slim_size or FLAGS.image_size)
    try:
        spec = export.input_spec(model, size)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    height, width = spec.shape[1], spec.shape[2]
    if height != width and not speech:
        raise app.UsageError(f"the data pipelines make square images; the model takes "
                             f"{height}x{width}")

    def images(split, count):
        dataset, _ = evaluation.model_dataset(
            model, FLAGS.dataset, split, FLAGS.batch_size, data_dir=FLAGS.data_dir,
            image_size=None if speech else height, num_frames=width if speech else None)
        return export.take_images(dataset, count)

    if FLAGS.format == "saved_model":
        export.export_saved_model(model, FLAGS.output, image_size=(height, width))
    elif FLAGS.format == "onnx":
        try:
            onnx_model = export.to_onnx(model, image_size=(height, width))
        except export.UnsupportedOpsError as error:
            raise app.UsageError(str(error)) from error
        with open(FLAGS.output, "wb") as f:
            f.write(onnx_model)
    else:
        calibration = None
        if FLAGS.quantize == "int8":
            calibration = images("train", FLAGS.calibration_images)
            print(f"calibrating int8 on {len(calibration)} {FLAGS.dataset} train "
                  f"{'windows' if speech else 'images'}")
        flatbuffer = export.to_tflite(model, FLAGS.quantize, representative_images=calibration,
                                      image_size=(height, width))
        with open(FLAGS.output, "wb") as f:
            f.write(flatbuffer)
    kind = f"tflite ({FLAGS.quantize})" if FLAGS.format == "tflite" else FLAGS.format
    print(f"{model.name} -> {kind} {FLAGS.output}: {disk_size(FLAGS.output):,} bytes, "
          f"input {height}x{width}{' log-mel x frames' if speech else ''}")
    if FLAGS.parity_images <= 0:
        return
    held_out = images(FLAGS.split, FLAGS.parity_images)
    result = export.parity(model, FLAGS.output, held_out, batch_size=FLAGS.batch_size)
    unit = "windows" if speech else "images"
    print(f"parity against Keras on {result['count']} {FLAGS.dataset} {FLAGS.split} {unit}:")
    print(f"max abs diff: {result['max_abs_diff']:.6g}")
    print(f"top-1 agreement: {100 * result['top1_agreement']:.2f}%")


if __name__ == "__main__":
    app.run(main)
