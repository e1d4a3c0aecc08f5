"""Speech pipeline: WAV folders -> log-mel + deltas, windows, bad audio (generated WAVs)."""

import os
import wave

import numpy as np
import pytest
import scipy.io.wavfile
import tensorflow as tf
from audio import RATE, chirp, tone, write
from tfds_offline import no_download, prepare_tfds  # noqa: F401 (fixture)

import pipelines
from pipelines import bad_data, speech


def mel_of_hz(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)


def expected_mel_bin(freq):
    edges = np.linspace(mel_of_hz(speech.LOWER_HZ), mel_of_hz(speech.UPPER_HZ),
                        speech.NUM_MEL + 2)
    return int(np.argmin(np.abs(edges[1:-1] - mel_of_hz(freq))))


def waveform_of(path):
    return speech.decode_audio(tf.io.read_file(path))[0]


def peak_bin(path):
    mel = speech.log_mel(waveform_of(path)).numpy()
    return int(np.argmax(mel.mean(axis=0)))


def test_feature_shape_dtype_and_eager_equals_dataset_map(tmp_path):
    t = np.arange(RATE) / RATE
    chirp = (0.5 * np.sin(2 * np.pi * (200 + 3000 * t) * t) * 32767).astype(np.int16)
    path = write(str(tmp_path / "a.wav"), RATE, chirp)
    eager = speech.features_from_waveform(waveform_of(path))
    assert eager.shape == (64, 98, 3) and eager.dtype == tf.float32
    assert speech.num_frames_of(16000) == 98

    def fn(p):
        return speech.features_from_waveform(speech.decode_audio(tf.io.read_file(p))[0])

    mapped = next(iter(tf.data.Dataset.from_tensors(path).map(fn)))
    np.testing.assert_allclose(mapped.numpy(), eager.numpy(), atol=1e-3)
    windows = speech.context_windows(eager)
    mapped_w = next(iter(tf.data.Dataset.from_tensors(eager).map(speech.context_windows)))
    np.testing.assert_allclose(mapped_w.numpy(), windows.numpy())
    fixed = next(iter(tf.data.Dataset.from_tensors(eager).map(
        lambda f: speech.fixed_window(f, 120))))
    np.testing.assert_allclose(fixed.numpy(), speech.fixed_window(eager, 120).numpy())


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_pure_tone_peaks_at_its_mel_bin(tmp_path, freq):
    path = write(str(tmp_path / "t.wav"), RATE, tone(freq, 0.5))
    assert peak_bin(path) == expected_mel_bin(freq)


@pytest.mark.parametrize("freq", [500.0, 2500.0])
def test_resampling_keeps_tone_frequency(tmp_path, freq):
    bins, lengths = [], []
    for rate, channels in ((16000, 1), (8000, 1), (44100, 2), (22050, 2)):
        path = write(str(tmp_path / f"{rate}.wav"), rate, tone(freq, 0.5, rate, channels=channels))
        bins.append(peak_bin(path))
        lengths.append(int(waveform_of(path).shape[0]))
    assert bins == [expected_mel_bin(freq)] * 4
    assert all(abs(n - 8000) <= 1 for n in lengths)


def test_resample_inside_dataset_map_and_exact_frequency():
    x = np.sin(2 * np.pi * 1234.0 * np.arange(44100) / 44100).astype(np.float32)
    out = next(iter(tf.data.Dataset.from_tensors(x).map(lambda s: speech.resample(s, 44100))))
    spectrum = np.abs(np.fft.rfft(out.numpy()))
    assert abs(np.argmax(spectrum) * RATE / out.shape[0] - 1234.0) <= 1.0


def test_downsampling_suppresses_aliases():
    # 12 kHz at 44.1 kHz is above the 8 kHz Nyquist of 16 kHz: must mostly vanish.
    t = np.arange(44100) / 44100
    high = speech.resample(np.sin(2 * np.pi * 12000 * t).astype(np.float32), 44100).numpy()
    low = speech.resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32), 44100).numpy()
    assert np.sqrt(np.mean(high[100:-100] ** 2)) < 0.05 * np.sqrt(np.mean(low ** 2))


def test_deltas_of_constant_are_zero(tmp_path):
    const = tf.fill([30, 64], 3.5)
    assert np.abs(speech.deltas(const).numpy()).max() < 1e-6
    ramp = tf.tile(tf.range(30, dtype=tf.float32)[:, None], [1, 4])
    np.testing.assert_allclose(speech.deltas(ramp).numpy()[2:-2], 1.0, atol=1e-5)
    # A stationary tone (10 periods per hop) has constant log-mel frames.
    path = write(str(tmp_path / "c.wav"), RATE, tone(1000, 0.5))
    raw = speech.features_from_waveform(waveform_of(path), normalized=False).numpy()
    assert np.abs(raw[..., 1:]).max() < 1e-3
    assert raw[..., 0].std(axis=1).max() < 1e-3


def test_normalisation_zero_mean_unit_variance():
    rng = np.random.default_rng(0)
    t = np.arange(RATE) / RATE
    chirp = np.sin(2 * np.pi * (200 + 3000 * t) * t) + 0.1 * rng.standard_normal(RATE)
    feats = speech.features_from_waveform(tf.constant(chirp, tf.float32)).numpy()
    np.testing.assert_allclose(feats.mean(axis=1), 0.0, atol=1e-3)
    np.testing.assert_allclose(feats.var(axis=1), 1.0, atol=1e-2)


def make_corpus(root, with_alignments=False):
    """train/<class>/*.wav: class k is a tone at 400 * (k + 1) Hz, mixed rates, some stereo."""
    specs = [("a_low", 400.0), ("b_mid", 1200.0), ("c_high", 2800.0)]
    files = []
    for k, (name, freq) in enumerate(specs):
        for i, (rate, channels, seconds) in enumerate(
                ((16000, 1, 1.3), (8000, 1, 0.6), (44100, 2, 1.0))):
            path = write(os.path.join(root, "train", name, f"u{i}.wav"), rate,
                         tone(freq, seconds, rate, channels=channels))
            files.append((path, k, seconds))
            if with_alignments:
                frames = speech.num_frames_of(int(seconds * RATE))
                labels = (np.arange(frames) + k) % 5
                with open(path[:-4] + ".ali", "w") as f:
                    f.write(" ".join(map(str, labels)) + "\n")
    return files


def test_utterance_dataset_fixed_windows_and_labels(tmp_path):
    make_corpus(str(tmp_path))
    ds = speech.get_speech_dataset(f"speech:{tmp_path}", "train", batch_size=4, training=False,
                                   num_frames=98)
    assert ds.num_classes == 3 and ds.num_examples == 9
    feats, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    feats, labels = np.concatenate(feats), np.concatenate(labels)
    assert feats.shape == (9, 64, 98, 3) and feats.dtype == np.float32
    assert labels.dtype == np.int32 and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.bad_data.count == 0
    train = speech.get_speech_dataset(str(tmp_path), "train", batch_size=4, training=True,
                                      num_frames=50, seed=1)
    batches = list(train)
    assert len(batches) == 2 and all(x.shape == (4, 64, 50, 3) for x, _ in batches)


def test_short_utterance_zero_padded_centrally():
    feats = tf.ones([64, 10, 3])
    out = speech.fixed_window(feats, 20).numpy()
    assert out.shape == (64, 20, 3)
    assert (out[:, :5] == 0).all() and (out[:, 5:15] == 1).all() and (out[:, 15:] == 0).all()
    long = tf.tile(tf.range(30, dtype=tf.float32)[None, :, None], [64, 1, 3])
    assert speech.fixed_window(long, 10).numpy()[0, :, 0].tolist() == list(range(10, 20))
    rand = speech.fixed_window(long, 10, seed=tf.constant([1, 2])).numpy()[0, :, 0]
    assert rand.tolist() == list(range(int(rand[0]), int(rand[0]) + 10))


def test_frame_windows_count_and_centre_label(tmp_path):
    files = make_corpus(str(tmp_path), with_alignments=True)
    ds = speech.get_speech_dataset(str(tmp_path), "train", batch_size=64, training=False,
                                   labels="frame", deterministic=True)
    feats, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    feats, labels = np.concatenate(feats), np.concatenate(labels)
    frames = [speech.num_frames_of(int(s * RATE)) for _, _, s in files]
    assert feats.shape == (sum(frames), 64, 49, 3) and ds.bad_data.count == 0
    expected = np.concatenate([(np.arange(n) + k) % 5 for (_, k, _), n in zip(files, frames)])
    np.testing.assert_array_equal(labels, expected)
    # The centre of window t is frame t of the utterance's features.
    utt = speech.features_from_waveform(waveform_of(files[0][0]))
    np.testing.assert_allclose(feats[:frames[0], :, 24], np.transpose(utt.numpy(), [1, 0, 2]),
                               atol=2e-2)
    # Edge windows repeat the first frame.
    np.testing.assert_allclose(feats[0, :, 0], utt.numpy()[:, 0], atol=2e-2)


BAD_KINDS = ("empty", "corrupt_header", "text", "too_short", "float_nan", "eight_bit",
             "bad_alignment")


def make_bad_files(root):
    folder = os.path.join(root, "train", "z_bad")
    os.makedirs(folder, exist_ok=True)
    paths = {k: os.path.join(folder, f"{k}.wav") for k in BAD_KINDS}
    open(paths["empty"], "wb").close()
    good = os.path.join(folder, "tmp.bin")
    scipy.io.wavfile.write(good, RATE, tone(440, 0.2))
    data = open(good, "rb").read()
    os.remove(good)
    with open(paths["corrupt_header"], "wb") as f:
        f.write(b"RIFX" + data[4:12] + b"garbage!" + data[20:])
    with open(paths["text"], "w") as f:
        f.write("this is not audio\n" * 50)
    with wave.open(paths["too_short"], "wb") as w:  # 20 ms at 16 kHz < one 25 ms window
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(tone(440, 0.02).tobytes())
    samples = np.zeros(RATE // 2, np.float32)
    samples[100] = np.nan
    scipy.io.wavfile.write(paths["float_nan"], RATE, samples)
    scipy.io.wavfile.write(paths["eight_bit"], RATE, np.full(RATE // 2, 128, np.uint8))
    scipy.io.wavfile.write(paths["bad_alignment"], RATE, tone(440, 0.5))
    return paths


def test_bad_audio_skipped_and_named(tmp_path):
    make_corpus(str(tmp_path))
    paths = make_bad_files(str(tmp_path))
    bad = sorted(p for k, p in paths.items() if k != "bad_alignment")
    ds = speech.get_speech_dataset(str(tmp_path), "train", batch_size=8, training=False)
    n = sum(int(y.shape[0]) for _, y in ds)
    assert n == 9 + 1  # the corpus plus the good-audio file (alignments unused here)
    assert ds.bad_data.count == len(bad) and ds.bad_data.names == bad


def test_bad_alignments_skipped_in_frame_mode(tmp_path):
    make_corpus(str(tmp_path), with_alignments=True)
    paths = make_bad_files(str(tmp_path))
    with open(paths["bad_alignment"][:-4] + ".ali", "w") as f:
        f.write("1 2 3\n")  # 3 labels for 48 frames
    # One more: a good wav whose alignment is missing, one with a label out of range.
    missing = write(os.path.join(str(tmp_path), "train", "z_bad", "no_ali.wav"), RATE,
                    tone(440, 0.5))
    out_of_range = write(os.path.join(str(tmp_path), "train", "z_bad", "range.wav"), RATE,
                         tone(440, 0.5))
    with open(out_of_range[:-4] + ".ali", "w") as f:
        f.write(" ".join(["7"] * speech.num_frames_of(RATE // 2)))
    ds = speech.get_speech_dataset(str(tmp_path), "train", batch_size=256, training=False,
                                   labels="frame", num_classes=5)
    labels = np.concatenate([y.numpy() for _, y in ds])
    assert labels.max() < 5
    assert ds.bad_data.names == sorted([*paths.values(), missing, out_of_range])


def test_raise_mode_names_first_bad_file(tmp_path):
    make_corpus(str(tmp_path))
    paths = make_bad_files(str(tmp_path))
    ds = speech.get_speech_dataset(str(tmp_path), "train", batch_size=2, training=False,
                                   on_error="raise", deterministic=True)
    first = sorted(p for k, p in paths.items() if k != "bad_alignment")[0]
    with pytest.raises(Exception, match=os.path.basename(first)) as info:
        for _ in ds:
            pass
    assert first in str(info.value)


def test_audio_problem_checks_short_and_nonfinite():
    assert speech.audio_problem(tf.zeros([400])).numpy() == b""
    assert b"too short" in speech.audio_problem(tf.zeros([399])).numpy()
    x = np.zeros(800, np.float32)
    x[5] = np.inf
    assert b"NaN or infinite" in speech.audio_problem(tf.constant(x)).numpy()
    assert isinstance(bad_data.BadExampleError("x"), ValueError)


def test_argument_errors(tmp_path):
    make_corpus(str(tmp_path))
    with pytest.raises(ValueError, match="labels"):
        speech.get_speech_dataset(str(tmp_path), "train", 2, False, labels="word")
    with pytest.raises(ValueError, match="on_error"):
        speech.get_speech_dataset(str(tmp_path), "train", 2, False, on_error="ignore")
    with pytest.raises(ValueError, match="49-frame context windows, got num_frames=98"):
        speech.get_speech_dataset(str(tmp_path), "train", 2, False, labels="frame",
                                  num_frames=98)
    with pytest.raises(ValueError, match="no speech folder"):
        speech.get_speech_dataset(str(tmp_path), "test", 2, False)


def test_input_context_shards_files_and_batch(tmp_path):
    make_corpus(str(tmp_path))
    seen = []
    for i in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i,
                                         num_replicas_in_sync=2)
        ds = speech.get_speech_dataset(str(tmp_path), "train", 4, False, input_context=ctx)
        batches = [y.numpy() for _, y in ds]
        assert max(len(b) for b in batches) == 2
        seen.append(sum(len(b) for b in batches))
    assert seen == [5, 4]


SPEECH_COMMANDS_CLASSES = 12  # ten words, _silence_, _unknown_


def test_tfds_speech_commands_prepared_offline(tmp_path, no_download):  # noqa: F811
    """A speech_commands copy prepared offline with the real builder's features reads like a
    WAV folder: same features for the same samples, TFDS labels and class names, the short clip
    skipped and named by its TFDS id, "val" mapped to validation."""
    clips = [(chirp(300 + 200 * k, 1.0), k) for k in range(4)]
    short = tone(440, 0.01)  # 160 samples < one 25 ms window
    prepare_tfds("speech_commands", str(tmp_path), {
        "train": [[{"audio": a, "label": k} for a, k in clips] + [{"audio": short, "label": 3}]],
        "validation": [[{"audio": clips[1][0], "label": 11}]],
    })
    ds = speech.get_speech_dataset("speech_commands", "train", batch_size=8, training=False,
                                   data_dir=str(tmp_path), deterministic=True)
    assert ds.num_classes == SPEECH_COMMANDS_CLASSES and ds.num_examples == 5
    assert ds.class_names[:2] == ["down", "go"] and ds.class_names[-1] == "_unknown_"
    feats, labels = next(iter(ds))
    assert feats.shape == (4, 64, 98, 3) and labels.numpy().tolist() == [0, 1, 2, 3]
    folder = write(str(tmp_path / "wav" / "a.wav"), RATE, clips[2][0])
    np.testing.assert_allclose(feats[2], speech.features_from_waveform(waveform_of(folder)),
                               atol=1e-3)  # float rounding in log(mel + 1e-6)
    assert ds.bad_data.count == 1 and "speech_commands-train" in ds.bad_data.names[0]
    val = speech.get_speech_dataset("speech_commands", "val", 2, False, data_dir=str(tmp_path))
    assert [y.numpy().tolist() for _, y in val] == [[11]]
    with pytest.raises(ValueError, match="data_dir"):
        speech.get_speech_dataset("speech_commands", "train", 2, False)
    with pytest.raises(ValueError, match="not prepared"):
        speech.get_speech_dataset("speech_commands", "train", 2, False,
                                  data_dir=str(tmp_path / "wav"))
    with pytest.raises(ValueError, match="one label per utterance"):
        speech.get_speech_dataset("speech_commands", "train", 2, False, labels="frame",
                                  data_dir=str(tmp_path))


def test_repeat_streams_past_bad_files_and_counts_them_exactly(tmp_path):
    """With repeat=True a training stream never ends, even when bad files make a pass shorter
    than the nominal number of batches; every batch is full, and while streaming the report
    names exactly the bad files (never a good one in flight), however often it is read while
    the pipeline's threads run ahead (reading the table before the last number out once
    counted good files that came out in between)."""
    make_corpus(str(tmp_path))
    paths = make_bad_files(str(tmp_path))
    bad = sorted(p for k, p in paths.items() if k != "bad_alignment")
    ds = speech.get_speech_dataset(str(tmp_path), "train", batch_size=4, training=True,
                                   num_frames=49, seed=0, repeat=True)
    iterator = iter(ds)
    for step in range(8):  # 8 x 4 = 32 > the 10 good utterances of a pass
        _, labels = next(iterator)
        assert len(labels) == 4
        for _ in range(40):  # prefetch refills the buffer meanwhile
            assert set(ds.bad_data.names) <= set(bad), step
    assert ds.bad_data.names == bad


def test_get_dataset_passes_the_shuffle_buffer_to_speech(tmp_path):
    """pipelines.get_dataset's shuffle_buffer reaches the speech windows: with a buffer of one
    the frame windows of a file come out in order (labels counting up mod 5), with the default
    buffer they are mixed."""
    make_corpus(str(tmp_path), with_alignments=True)

    def steps_of_one(**kwargs):
        ds = pipelines.get_dataset(f"speech:{tmp_path}", "train", None, 32, training=True,
                                   labels="frame", seed=0, **kwargs)
        labels = next(iter(ds))[1].numpy()
        return int(np.sum((np.diff(labels) % 5) == 1))

    assert steps_of_one(shuffle_buffer=1) >= 29  # at most two file boundaries in 32 windows
    assert steps_of_one() < 20
