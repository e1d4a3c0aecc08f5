"""Exports a trained `.keras` model for deployment and checks the export against Keras.

    python -m apps.export --model_path=model.keras --output=model.tflite --format=tflite \
        --quantize=int8 [--dataset=digits --data_dir= --split=test --image_size=32 \
        --calibration_images=200 --parity_images=500]
    python -m apps.export --model_path=model.keras --output=served/ --format=saved_model

A SavedModel's default signature takes uint8 RGB images; a TFLite flatbuffer takes float32
images in [0, 255] (also when int8-quantized). int8 calibration images come from the `train`
split of `--dataset`; the parity check runs on `--split` (held out) and prints the largest
absolute output difference and the top-1 agreement with the Keras model.

Speech acoustic models export the same way with float32 log-mel windows [64, frames, 3] as
inputs (SavedModel and TFLite alike), calibrated and checked on `--dataset=speech:PATH` or
`speech_commands` windows:

    python -m apps.export --model_path=runs/speech/model.keras --output=am.tflite \
        --dataset=speech:PATH --split=test [--num_frames=98]
"""

import os

import keras
from absl import app, flags, logging

from bl_keras import evaluation, export

FLAGS = flags.FLAGS
flags.DEFINE_string("model_path", None, "Keras model to export (.keras).")
flags.DEFINE_string("output", None, "Where to write: a .tflite file or a SavedModel directory.")
flags.DEFINE_enum("format", "tflite", ["saved_model", "tflite"], "Export format.")
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
flags.mark_flags_as_required(["model_path", "output"])


def disk_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TF's SavedModel-writing chatter

    if FLAGS.format == "saved_model" and FLAGS.quantize != "none":
        raise app.UsageError("--quantize applies to --format=tflite only")
    model = keras.models.load_model(FLAGS.model_path)
    speech = export.takes_features(model)
    if speech and FLAGS.image_size:
        raise app.UsageError("--image_size is for image models; pass --num_frames")
    if not speech and FLAGS.num_frames:
        raise app.UsageError("--num_frames is for speech models; pass --image_size")
    size = (model.input_shape[1], FLAGS.num_frames) if speech and FLAGS.num_frames else (
        FLAGS.image_size)
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
    kind = FLAGS.format if FLAGS.format == "saved_model" else f"tflite ({FLAGS.quantize})"
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
