"""The end-to-end demo behind `make demo`: train a CIFAR-size bL-ResNet and its ResNet baseline
on the bundled digits at 32x32, compare them, export the bL model to int8 TFLite with a parity
check, and plot accuracy against MACs."""

import os

from bl_keras import benchmark, evaluation, export, plots
from bl_keras.training import trainer

DEMO_MODELS = ("resnet20_cifar", "bl_resnet20_cifar")


def _rate(value):
    return "-" if value is None else f"{value:.0f}"  # None: resumed a finished run


def demo_config(name, workdir, epochs=10, seed=0):
    return trainer.TrainConfig(
        model=name, model_dir=os.path.join(workdir, name), dataset="digits", epochs=epochs,
        batch_size=64, image_size=32, lr=0.8, warmup_epochs=1, jit_compile=True, seed=seed,
        verbose=2)


def run(workdir, epochs=10, models=DEMO_MODELS, calibration_images=200, seed=0):
    """Trains `models`, prints a comparison table and the int8 TFLite parity of the last one,
    and writes `accuracy_vs_macs.png`. Returns (rows, parity)."""
    import keras
    import numpy as np

    import pipelines

    rows = []
    for name in models:
        config = demo_config(name, workdir, epochs, seed)
        metrics = trainer.train(config)
        model = keras.models.load_model(os.path.join(config.model_dir, "model.keras"))
        metrics["latency_ms"] = evaluation.latency_ms(model, config.image_size, "graph")
        metrics["latency_ms_tflite"] = evaluation.latency_ms(model, config.image_size, "tflite")
        rows.append(metrics)
    print("\n## Digits (1,797 real 8x8 images at 32x32), test split\n")
    print(benchmark.format_table(
        ["model", "test top-1", "MMACs", "params", "batch-1 ms, TF graph", "batch-1 ms, TFLite",
         "train img/s"],
        [[r["model"], f"{100 * r['top1']:.1f}%", f"{r['macs'] / 1e6:.1f}", f"{r['params']:,}",
          f"{r['latency_ms']:.2f}", f"{r['latency_ms_tflite']:.2f}",
          _rate(r['train_images_per_second'])] for r in rows]))
    if len(rows) == 2:
        print(f"\nMAC saving of {rows[1]['model']}: {rows[0]['macs'] / rows[1]['macs']:.2f}x")

    name = models[-1]
    model = keras.models.load_model(os.path.join(workdir, name, "model.keras"))
    calibration = export.take_images(pipelines.get_dataset(
        "digits", "train", 32, 50, training=False), calibration_images)
    test = np.concatenate([x.numpy() for x, _ in pipelines.get_dataset(
        "digits", "test", 32, 100, training=False)])
    flatbuffer = export.to_tflite(model, quantize="int8", representative_images=calibration)
    path = os.path.join(workdir, f"{name}_int8.tflite")
    with open(path, "wb") as f:
        f.write(flatbuffer)
    parity = export.parity(model, flatbuffer, test)
    print(f"\nint8 TFLite {path} ({len(flatbuffer) / 1024:.0f} KiB): top-1 agreement with Keras "
          f"{100 * parity['top1_agreement']:.1f}% on {parity['count']} test images, max abs "
          f"diff {parity['max_abs_diff']:.4f}")
    plot = plots.accuracy_vs_macs(rows, os.path.join(workdir, "accuracy_vs_macs.png"),
                                  title="Digits 32x32: accuracy against compute")
    print(f"plot: {plot}")
    return rows, parity
