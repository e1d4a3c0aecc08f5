"""Images/s of our ImageNet training pipeline against `keras.utils.image_dataset_from_directory`
with the same random-resized crop and flip, on generated JPEGs, both in one run.

    python benchmarks/pipeline.py [--num_images=512 --width=500 --height=375 --batches=30]

Ours decodes only the crop window (`tf.image.decode_and_crop_jpeg`); the Keras loader decodes
(and resizes) whole images and is cropped afterwards. Besides images/s (wall clock, which other
load on the machine moves) it reports CPU time per image (all threads of this process), whose
ratio is steadier, and where our recipe spends its CPU time, stage by stage.
"""

import gc
import os
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
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory() as root:
        write_jpegs(root, FLAGS.num_images, FLAGS.width, FLAGS.height)
        # One pipeline at a time, a fresh iterator per round: an idle iterator would keep
        # prefetching in the background while another is timed and inflate its next round.
        makers = {
            "bl_keras pipelines": lambda: ours(root, FLAGS.image_size, FLAGS.batch_size),
            "bl_keras pipelines, repeat=True (the trainer's)": lambda: ours_streaming(
                root, FLAGS.image_size, FLAGS.batch_size),
            "keras image_dataset_from_directory": lambda: keras_loader(
                root, FLAGS.image_size, FLAGS.batch_size, FLAGS.width, FLAGS.height),
        }
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
    print(f"ImageNet training pipeline, {FLAGS.width}x{FLAGS.height} JPEGs -> "
          f"{FLAGS.image_size}x{FLAGS.image_size}, batch {FLAGS.batch_size}, {cores} cores\n")
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
