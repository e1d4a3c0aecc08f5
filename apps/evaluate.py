"""Evaluates a saved model: top-1/top-5, MACs, params and batch-1 latency (JSON and a table).

    python -m apps.evaluate --model_path=runs/digits/model.keras --dataset=digits --split=test
    python -m apps.evaluate --model_path=runs/speech/model.keras --dataset=speech:PATH \
        --labels=frame       # frame accuracy (one 49-frame window per frame); or utterance

Speech models report utterance accuracy (a window of --num_frames frames per utterance,
centrally cropped or padded, defaulting to the model's) or frame accuracy (--labels=frame).
"""

import json

import keras
from absl import app, flags

import pipelines
from bl_keras import benchmark, evaluation, export
from pipelines import speech

FLAGS = flags.FLAGS
flags.DEFINE_string("model_path", None, "A .keras model.")
flags.DEFINE_string("dataset", "digits", "digits, cifar10, cifar100, imagenet, folder:, tfrecord:.")
flags.DEFINE_string("data_dir", None, "Where the data set is prepared.")
flags.DEFINE_string("split", "test", "Split to evaluate.")
flags.DEFINE_integer("image_size", None, "Input size (default: the model's).")
flags.DEFINE_enum("labels", "utterance", ["utterance", "frame"],
                  "Speech: accuracy per utterance or per frame (alignment files).")
flags.DEFINE_integer("num_frames", None, "Speech utterance window in frames (default: the "
                     "model's; frame labels use 49).")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("classes", None, "Number of classes where the data set does not fix it.")
flags.DEFINE_enum("latency_runtime", "graph", ["graph", "xla", "tflite"], "Runtime of the "
                  "batch-1 latency.")
flags.DEFINE_string("output", None, "Also write the JSON report here.")
flags.mark_flag_as_required("model_path")


def speech_data(model):
    """(dataset, (64, frames)) for a speech model: frame windows of 49 frames, or utterance
    windows of --num_frames (default: the model's static input length)."""
    requested = FLAGS.num_frames or (None if FLAGS.labels == "frame" else model.input_shape[2])
    if FLAGS.labels == "utterance" and requested is None:
        raise app.UsageError("the model takes any number of frames: pass --num_frames")
    try:
        frames = speech.window_frames(FLAGS.labels, requested)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    if model.input_shape[2] not in (None, frames):
        raise app.UsageError(f"the model takes {model.input_shape[2]}-frame windows, not "
                             f"{frames} (--labels={FLAGS.labels}, --num_frames)")
    dataset = pipelines.get_dataset(FLAGS.dataset, FLAGS.split, None, FLAGS.batch_size,
                                    training=False, data_dir=FLAGS.data_dir,
                                    num_classes=FLAGS.classes, labels=FLAGS.labels,
                                    num_frames=frames)
    return dataset, (model.input_shape[1], frames)


def main(argv):
    del argv
    model = keras.models.load_model(FLAGS.model_path)
    if export.takes_features(model):
        dataset, size = speech_data(model)
        unit = "frames" if FLAGS.labels == "frame" else "utterances"
    else:
        size = FLAGS.image_size or model.input_shape[1]
        if size is None:
            raise app.UsageError("the model takes any size: pass --image_size")
        dataset = pipelines.get_dataset(FLAGS.dataset, FLAGS.split, size, FLAGS.batch_size,
                                        training=False, data_dir=FLAGS.data_dir,
                                        num_classes=FLAGS.classes)
        unit = "images"
    report = evaluation.evaluate(model, dataset, size, FLAGS.latency_runtime, verbose=1)
    report.update(model_path=FLAGS.model_path, dataset=FLAGS.dataset, split=FLAGS.split,
                  accuracy_of=unit, input_size="x".join(map(str, evaluation.as_size(size))),
                  examples_skipped_as_bad=dataset.bad_data.count if dataset.bad_data else None)
    rows = [[k, f"{v:.4f}" if isinstance(v, float) else str(v)] for k, v in report.items()]
    print(benchmark.format_table(["metric", "value"], rows))
    print(json.dumps(report))
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    app.run(main)
