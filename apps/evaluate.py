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

from bl_keras import benchmark, evaluation, export

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
flags.DEFINE_enum("latency_runtime", "graph", list(evaluation.timing.RUNTIMES), "Runtime of the "
                  "batch-1 latency.")
flags.DEFINE_string("output", None, "Also write the JSON report here.")
flags.mark_flag_as_required("model_path")


def main(argv):
    del argv
    model = keras.models.load_model(FLAGS.model_path)
    speech = export.takes_features(model)
    try:
        dataset, size = evaluation.model_dataset(
            model, FLAGS.dataset, FLAGS.split, FLAGS.batch_size, data_dir=FLAGS.data_dir,
            image_size=None if speech else FLAGS.image_size, labels=FLAGS.labels,
            num_frames=FLAGS.num_frames, num_classes=FLAGS.classes)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    unit = evaluation.accuracy_unit(speech, FLAGS.labels)
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
