"""Images/s of our ImageNet training pipeline against `keras.utils.image_dataset_from_directory`
with the same random-resized crop and flip, on generated JPEGs, both in one run.

    python benchmarks/pipeline.py [--num_images=512 --width=500 --height=375 --batches=30]

Ours decodes only the crop window (`tf.image.decode_and_crop_jpeg`); the Keras loader decodes
(and resizes) whole images and is cropped afterwards. Besides images/s (wall clock, which other
load on the machine moves) it reports CPU time per image (all threads of this process), whose
ratio is steadier, and where our recipe spends its CPU time, stage by stage.

It first times the start-up of each pipeline: seconds from the call that builds it to its first
batch, in a fresh process (`--startup_rounds` processes each, after `import tensorflow, keras`
and one warm-up op, so that neither pays for the other's TensorFlow start-up) and warm (in this
process, after one untimed call of each); medians.
"""

import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags
from PIL import Image

import pipelines
from pipelines import preprocess

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_images", 512, "Generated JPEGs (4 classes).")
flags.DEFINE_integer("width", 500, "Width of the generated images.")
flags.DEFINE_integer("height", 375, "Height of the generated images.")
flags.DEFINE_integer("image_size", 224, "Training crop size.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("batches", 30, "Timed batches per pipeline (after 3 warm-up batches).")
flags.DEFINE_integer("rounds", 3, "Timing rounds per pipeline (best one kept).")
flags.DEFINE_integer("startup_rounds", 3, "Call-to-first-batch timings of each pipeline, in "
                     "fresh processes and warm (medians shown).")
flags.DEFINE_string("first_batch_of", None, "Internal (the fresh-process timing): print the "
                    "seconds from the call to the first batch of this pipeline in --root, exit.")
flags.DEFINE_string("root", None, "Internal: the image folder of --first_batch_of.")


def write_jpegs(root, count, width, height, classes=4, seed=0):
    """Photo-like JPEGs (smooth gradients plus noise) in root/train/<class>/."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(count):
        folder = os.path.join(root, "train", f"class{i % classes}")
        os.makedirs(folder, exist_ok=True)
        base = np.stack([(xx * rng.uniform(0.2, 0.6) + yy * rng.uniform(0.1, 0.5)) % 256,
                         (xx * rng.uniform(0.1, 0.4)) % 256,
                         (yy * rng.uniform(0.1, 0.4)) % 256], axis=-1)
        image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)


def ours(root, image_size, batch_size):
    return pipelines.get_dataset(f"folder:{root}", "train", image_size, batch_size,
                                 training=True).repeat()


def ours_streaming(root, image_size, batch_size):
    """The trainer's stream: examples repeated before the (then ordered) guarded map."""
    return pipelines.get_dataset(f"folder:{root}", "train", image_size, batch_size,
                                 training=True, repeat=True)


def keras_loader(root, image_size, batch_size, width, height):
    """Keras' directory loader (whole images at their size) + the same crop and flip."""
    import keras

    ds = keras.utils.image_dataset_from_directory(
        os.path.join(root, "train"), image_size=(height, width), batch_size=None, shuffle=True,
        seed=0, verbose=False)
    seeds = tf.data.Dataset.random(seed=0).batch(2)

    def crop_flip(image, label, seed):
        window = preprocess.sample_crop_window(tf.shape(image)[:2], seed)
        y, x, h, w = window
        image = tf.image.resize(image[y:y + h, x:x + w], (image_size, image_size))
        flip_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        return tf.image.stateless_random_flip_left_right(image, flip_seed), label

    ds = tf.data.Dataset.zip(ds, seeds).map(lambda e, s: crop_flip(*e, s),
                                           num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE).repeat()


def pipelines_of(root):
    """{name: function building the pipeline} of everything timed, for images in `root`."""
    return {
        "bl_keras pipelines": lambda: ours(root, FLAGS.image_size, FLAGS.batch_size),
        "bl_keras pipelines, repeat=True (the trainer's)": lambda: ours_streaming(
            root, FLAGS.image_size, FLAGS.batch_size),
        "keras image_dataset_from_directory": lambda: keras_loader(
            root, FLAGS.image_size, FLAGS.batch_size, FLAGS.width, FLAGS.height),
    }


STARTUP_TIMED = ("bl_keras pipelines", "keras image_dataset_from_directory")


def first_batch_seconds(make):
    """Seconds from the call that builds a pipeline to its first batch."""
    start = time.perf_counter()
    next(iter(make()))
    return time.perf_counter() - start


def fresh_first_batch_seconds(name, root):
    """`first_batch_seconds` of pipeline `name` in a new Python process (this script with
    --first_batch_of)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (repo, os.environ.get("PYTHONPATH")) if p))
    args = [f"--{k}={getattr(FLAGS, k)}" for k in ("width", "height", "image_size", "batch_size")]
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), f"--first_batch_of={name}",
         f"--root={root}", *args], capture_output=True, text=True, check=True, env=env).stdout
    return float(out.split("first_batch_seconds=")[1].split()[0])


def startup_seconds(root, rounds):
    """{name: (median fresh-process seconds, median warm seconds)} to the first batch of each of
    `STARTUP_TIMED`, the pipelines alternating."""
    makers = pipelines_of(root)
    fresh = {name: [] for name in STARTUP_TIMED}
    warm = {name: [] for name in STARTUP_TIMED}
    for _ in range(rounds):
        for name in STARTUP_TIMED:
            fresh[name].append(fresh_first_batch_seconds(name, root))
    for name in STARTUP_TIMED:  # untimed: this process's one-time TensorFlow start-up
        first_batch_seconds(makers[name])
        gc.collect()
    for _ in range(rounds):
        for name in STARTUP_TIMED:
            warm[name].append(first_batch_seconds(makers[name]))
            gc.collect()
    return {name: (statistics.median(fresh[name]), statistics.median(warm[name]))
            for name in STARTUP_TIMED}


def images_per_second(iterator, batches, batch_size):
    """(images/s, CPU microseconds per image) over `batches` batches after 3 warm-up ones."""
    for _ in range(3):
        next(iterator)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    images = batches * batch_size
    return images / (time.perf_counter() - start), (time.process_time() - cpu) / images * 1e6


def _crop_window(encoded, seed):
    image_hw = tf.image.extract_jpeg_shape(encoded, output_type=tf.int32)[:2]
    return image_hw, preprocess.sample_crop_window(image_hw, seed)


STAGES = {
    "read the file": lambda encoded, seed: encoded,
    "+ sample the crop window": lambda encoded, seed: _crop_window(encoded, seed),
    "+ decode the window (fused)": lambda encoded, seed: preprocess._decode_jpeg_window(
        encoded, *_crop_window(encoded, seed)),
    "+ resize and flip (the whole recipe)": lambda encoded, seed: preprocess.imagenet_train(
        encoded, FLAGS.image_size, seed),
    "decode the whole image instead": lambda encoded, seed: preprocess.decode_rgb(encoded),
}
"""Cumulative stages of our training recipe, and a full decode for comparison."""


def stage_costs(root, batches, batch_size, rounds):
    """CPU microseconds per image of each of `STAGES` in a parallel map over the files (the
    least of `rounds` rounds)."""
    paths = sorted(tf.io.gfile.glob(os.path.join(root, "train", "*", "*.jpg")))
    costs = {}
    for name, stage in STAGES.items():
        def run(path, seed, stage=stage):
            # One number from each output (not its size, which the graph would know without
            # running the stage).
            firsts = [tf.strings.length(o) if o.dtype == tf.string else tf.reshape(o, [-1])[0]
                      for o in tf.nest.flatten(stage(tf.io.read_file(path), seed))]
            return tf.add_n([tf.cast(f, tf.float32) for f in firsts])

        seeds = tf.data.Dataset.random(seed=0).batch(2)
        ds = tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices(paths).repeat(), seeds)
        ds = ds.map(run, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)
        costs[name] = min(images_per_second(iter(ds), batches, batch_size)[1]
                          for _ in range(rounds))
        gc.collect()
    return costs


def main(argv):
    del argv
    if FLAGS.first_batch_of:
        import keras  # noqa: F401  (imported before the clock starts, whichever is timed)

        tf.constant(1.0) + 1.0  # one warm-up op
        make = pipelines_of(FLAGS.root)[FLAGS.first_batch_of]
        print(f"first_batch_seconds={first_batch_seconds(make):.4f}")
        return
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory() as root:
        write_jpegs(root, FLAGS.num_images, FLAGS.width, FLAGS.height)
        startup = startup_seconds(root, FLAGS.startup_rounds)
        # One pipeline at a time, a fresh iterator per round: an idle iterator would keep
        # prefetching in the background while another is timed and inflate its next round.
        makers = pipelines_of(root)
        rates = {name: [] for name in makers}
        cpu = {name: [] for name in makers}
        for _ in range(FLAGS.rounds):
            for name, make in makers.items():
                iterator = iter(make())
                rate, micros = images_per_second(iterator, FLAGS.batches, FLAGS.batch_size)
                rates[name].append(rate)
                cpu[name].append(micros)
                del iterator
                gc.collect()
        stages = stage_costs(root, FLAGS.batches, FLAGS.batch_size, FLAGS.rounds)
    best = {name: max(r) for name, r in rates.items()}
    least = {name: min(c) for name, c in cpu.items()}
    ours_rate, streaming_rate, keras_rate = best.values()
    ours_cpu, streaming_cpu, keras_cpu = least.values()
    print(f"ImageNet training pipeline, {FLAGS.num_images} {FLAGS.width}x{FLAGS.height} JPEGs "
          f"-> {FLAGS.image_size}x{FLAGS.image_size}, batch {FLAGS.batch_size}, {cores} cores\n")
    print(f"| call to first batch, s (median of {FLAGS.startup_rounds}) | fresh process | warm |")
    print("|---|---|---|")
    for name, (fresh, warm) in startup.items():
        print(f"| {name} | {fresh:.2f} | {warm:.2f} |")
    (ours_fresh, ours_warm), (keras_fresh, keras_warm) = startup.values()
    print(f"\nstart-up time, ours / Keras': {ours_fresh / keras_fresh:.2f}x fresh, "
          f"{ours_warm / keras_warm:.2f}x warm\n")
    print("| pipeline | images/s | images/s per core | CPU us per image |")
    print("|---|---|---|---|")
    for name, rate in best.items():
        print(f"| {name} | {rate:.0f} | {rate / cores:.0f} | {least[name]:.0f} |")
    print(f"\nratio: {ours_rate / keras_rate:.2f}x (repeat=True: "
          f"{streaming_rate / keras_rate:.2f}x)")
    print(f"CPU ratio: {keras_cpu / ours_cpu:.2f}x (repeat=True: "
          f"{keras_cpu / streaming_cpu:.2f}x)\n")
    print("| stage of our recipe | CPU us per image |")
    print("|---|---|")
    for name, micros in stages.items():
        print(f"| {name} | {micros:.0f} |")


if __name__ == "__main__":
    app.run(main)
