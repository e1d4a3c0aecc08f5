"""Speech end to end through the apps: train on generated chirps (loss falls), evaluate
utterance and frame accuracy, export to TFLite with the parity check."""

import csv
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from audio import RATE, chirp, write
from tfds_offline import no_download, prepare_tfds  # noqa: F401 (fixture)

import pipelines
from bl_keras.training import trainer
from pipelines import speech

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
SWEEPS = (2500.0, -2500.0, 300.0)  # up, down, nearly flat: one class each
TINY = ["--width_multiplier=0.125", "--num_frames=49", "--batch_size=16", "--lr=0.4",
        "--verbose=2", "--seed=0"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """speech/<split>/class<k>/<i>.wav chirps of 0.5-0.7 s, with frame alignments."""
    root = tmp_path_factory.mktemp("speech")
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 8)):
        for k, sweep in enumerate(SWEEPS):
            for i in range(count):
                seconds = rng.uniform(0.5, 0.7)
                samples = chirp(rng.uniform(400, 700) if sweep > 0 else 3500, seconds,
                                sweep_hz=sweep * rng.uniform(0.9, 1.1))
                noise = rng.normal(scale=300, size=samples.size)
                samples = np.clip(samples + noise, -32768, 32767).astype(np.int16)
                path = write(str(root / split / f"class{k}" / f"{i}.wav"), RATE, samples)
                frames = speech.num_frames_of(samples.size)
                with open(path[:-4] + ".ali", "w") as f:
                    f.write(" ".join([str(k)] * frames))
    return root


def run_app(app, *args, timeout=300):
    run = subprocess.run([sys.executable, "-m", f"apps.{app}", *args], capture_output=True,
                         text=True, timeout=timeout, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_train_evaluate_export_utterances(corpus, tmp_path):
    run_app("train", "--model=bl_resnet22_speech", "--alpha=2", "--beta=3", *TINY,
            f"--dataset=speech:{corpus}", "--epochs=3", f"--model_dir={tmp_path}")
    with open(tmp_path / "history.csv") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["accuracy_of"] == "utterances" and metrics["input_shape"] == [64, 49, 3]
    assert metrics["examples_skipped_as_bad"] == 0
    model_path = tmp_path / "model.keras"
    assert keras.models.load_model(model_path).output_shape == (None, 3)

    report = tmp_path / "eval.json"
    run = run_app("evaluate", f"--model_path={model_path}", f"--dataset=speech:{corpus}",
                  "--split=test", f"--output={report}")
    evaluated = json.loads(report.read_text())
    assert evaluated["accuracy_of"] == "utterances" and evaluated["examples"] == 24
    assert evaluated["top1"] == pytest.approx(metrics["top1"], abs=1e-6)
    assert evaluated["input_size"] == "64x49" and evaluated["latency_ms_graph"] > 0

    flatbuffer = tmp_path / "am.tflite"
    run = run_app("export", f"--model_path={model_path}", f"--output={flatbuffer}",
                  f"--dataset=speech:{corpus}", "--split=test")
    assert "input 64x49 log-mel x frames" in run.stdout
    diff = float(re.search(r"max abs diff: (\S+)", run.stdout).group(1))
    agreement = float(re.search(r"top-1 agreement: (\S+)%", run.stdout).group(1))
    assert "on 24 speech:" in run.stdout and diff < 1e-4 and agreement == 100.0, run.stdout


def test_frame_labels_train_and_evaluate(corpus, tmp_path):
    config = trainer.TrainConfig(
        model="resnet22_speech", model_dir=str(tmp_path), dataset=f"speech:{corpus}",
        labels="frame", classes=3, epochs=1, steps_per_epoch=4, batch_size=32, lr=0.4,
        verbose=0, seed=0,
        model_kwargs={"width_multiplier": 0.125})
    metrics = trainer.train(config)
    assert metrics["accuracy_of"] == "frames" and metrics["input_shape"] == [64, 49, 3]
    report = tmp_path / "eval.json"
    run_app("evaluate", f"--model_path={tmp_path / 'model.keras'}", "--labels=frame",
            f"--dataset=speech:{corpus}", "--split=test", f"--output={report}")
    evaluated = json.loads(report.read_text())
    test_frames = sum(
        len(p.read_text().split())
        for p in (corpus / "test").rglob("*.ali"))
    assert evaluated["accuracy_of"] == "frames" and evaluated["examples"] == test_frames
    assert evaluated["top1"] == pytest.approx(metrics["top1"], abs=1e-6)


def test_train_on_prepared_speech_commands(tmp_path, no_download):  # noqa: F811
    """`--dataset=speech_commands` trains from a TFDS copy prepared offline (12 classes)."""
    def clips(count):
        return [{"audio": chirp(500.0, 1.0, sweep_hz=SWEEPS[i % 3]), "label": i % 3}
                for i in range(count)]

    prepare_tfds("speech_commands", str(tmp_path / "tfds"),
                 {"train": [clips(16)], "test": [clips(6)]})
    config = trainer.TrainConfig(
        model="bl_resnet22_speech", model_dir=str(tmp_path / "run"), dataset="speech_commands",
        data_dir=str(tmp_path / "tfds"), num_frames=49, epochs=2, batch_size=8, lr=0.4,
        verbose=0, seed=0, model_kwargs={"alpha": 2, "beta": 3, "width_multiplier": 0.125})
    metrics = trainer.train(config)
    assert metrics["accuracy_of"] == "utterances" and metrics["examples_skipped_as_bad"] == 0
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert model.output_shape == (None, 12)
    assert int(model.optimizer.iterations.numpy()) == 2 * (16 // 8)


def test_model_and_data_kinds_must_agree(corpus, tmp_path):
    with pytest.raises(ValueError, match="speech models"):
        trainer.TrainConfig(model="resnet22_speech", model_dir=str(tmp_path)).validate()
    with pytest.raises(ValueError, match="takes image inputs"):
        trainer.TrainConfig(model="resnet20_cifar", model_dir=str(tmp_path),
                            dataset=f"speech:{corpus}").validate()
    with pytest.raises(ValueError, match="image_size=32 does not apply to speech"):
        pipelines.get_dataset(f"speech:{corpus}", "train", 32, 8, training=False)
    with pytest.raises(ValueError, match="num_frames=98"):
        pipelines.get_dataset(f"speech:{corpus}", "train", None, 8, False, labels="frame",
                              num_frames=98)
    with pytest.raises(ValueError, match="apply to speech"):
        pipelines.get_dataset("digits", "train", 16, 8, False, num_frames=49)


def test_model_dataset_fits_the_model(corpus):
    """evaluation.model_dataset (used by apps.evaluate and apps.export) makes the inputs a
    model takes, or refuses by name what cannot fit it."""
    from bl_keras import evaluation, models

    fixed = models.resnet22_speech(classes=3, width_multiplier=0.125, input_shape=(64, 49, 3))
    ds, size = evaluation.model_dataset(fixed, f"speech:{corpus}", "test", 8)
    assert size == (64, 49) and next(iter(ds))[0].shape == (8, 64, 49, 3)
    ds, size = evaluation.model_dataset(fixed, f"speech:{corpus}", "test", 8, labels="frame")
    assert size == (64, 49) and ds.num_examples is None  # one window per frame
    with pytest.raises(ValueError, match="takes 49-frame windows, not 98"):
        evaluation.model_dataset(fixed, f"speech:{corpus}", "test", 8, num_frames=98)
    with pytest.raises(ValueError, match="image_size=32 is for image models"):
        evaluation.model_dataset(fixed, f"speech:{corpus}", "test", 8, image_size=32)
    free = models.resnet22_speech(classes=3, width_multiplier=0.125)
    with pytest.raises(ValueError, match="any number of frames: give num_frames"):
        evaluation.model_dataset(free, f"speech:{corpus}", "test", 8)
    assert evaluation.model_dataset(free, f"speech:{corpus}", "test", 8, num_frames=60)[1] == (
        64, 60)

    image_model = models.resnet20_cifar(classes=10, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="any size: give image_size"):
        evaluation.model_dataset(image_model, "digits", "test", 8)
    ds, size = evaluation.model_dataset(image_model, "digits", "test", 8, image_size=32)
    assert size == (32, 32) and next(iter(ds))[0].shape == (8, 32, 32, 3)
    with pytest.raises(ValueError, match="num_frames=49 is for speech models"):
        evaluation.model_dataset(image_model, "digits", "test", 8, num_frames=49)
    small = models.resnet20_cifar(classes=10)  # 32x32
    assert evaluation.model_dataset(small, "digits", "test", 8)[1] == (32, 32)
    with pytest.raises(ValueError, match="square images of 40; the model takes 32x32"):
        evaluation.model_dataset(small, "digits", "test", 8, image_size=40)
    assert evaluation.accuracy_unit(False) == "images"
    assert evaluation.accuracy_unit(True, "frame") == "frames"
