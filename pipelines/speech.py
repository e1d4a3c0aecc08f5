"""Speech input for the Big-Little Net acoustic models (paper Appendix B.1): WAV folders ->
64 log-mel filterbanks + first and second derivatives, [64 mel, T frames, 3] per window.

Source layout (spec string ``speech:PATH`` or just ``PATH``)::

    PATH/<split>/<label>/<name>.wav     16-bit PCM, any sample rate, mono or multi-channel
    PATH/<split>/<label>/<name>.ali     frame labels only (labels="frame"), beside the wav

- Utterance labels (``labels="utterance"``): the class is the index of the ``<label>`` folder
  among the sorted class folders of the split (as `files.list_image_folder`).
- Frame labels (``labels="frame"``): the alignment ``<name>.ali`` is a text file of
  whitespace-separated integers (spaces or newlines), one class per 10 ms frame, in order.
  Frame t covers samples [160 t, 160 t + 400) at 16 kHz. An alignment may have up to
  `ALIGNMENT_SLACK` labels more or fewer than the utterance has frames (aligners differ in how
  they count the last partial frame): both are cut to the shorter. A larger mismatch, a missing
  or unparsable alignment, or a label outside [0, num_classes) makes the utterance bad. The
  folder level under the split is still required but its name is ignored.

Audio: `tf.audio.decode_wav` (16-bit PCM only: 8-bit, 24-bit and float WAVs are bad examples),
channels averaged to mono, resampled to 16 kHz by linear interpolation; when downsampling, a
Hann-windowed sinc low-pass (`RESAMPLE_TAPS` taps, cut-off 0.45 x 16 kHz = 7.2 kHz) runs first
against aliasing. Accuracy: a tone keeps its frequency exactly (the time base is exact); above
~6 kHz linear interpolation attenuates by up to a few dB and upsampling leaves weak images above
the original Nyquist. For 64 log-mel bins this is well below the resolution of the features;
it is not a high-fidelity resampler.

Features: power spectrum of a 25 ms (400-sample) periodic Hann window every 10 ms (160 samples),
512-point FFT, no padding (T = 1 + (n - 400) // 160 frames, 98 for 1 s); 64 mel filters over
20 Hz - 8 kHz (`tf.signal.linear_to_mel_weight_matrix`, HTK mel scale); log(mel + 1e-6).
Deltas: the standard regression d_t = sum_{k=1..2} k (c_{t+k} - c_{t-k}) / 10 with edge frames
repeated; second derivative = deltas of the deltas. Channels (log-mel, delta, delta-delta) are
stacked last and the result transposed to [64, T, 3] (frequency = height, time = width). Then
per-utterance mean/variance normalisation over time, per mel bin and channel
(x - mean) / sqrt(var + 1e-5) (a constant bin becomes 0).

Windows:
- frame labels: one window of `CONTEXT` = 49 frames centred on every frame (label of the centre
  frame), the utterance's edge frames repeated to fill windows at its ends: T windows per
  utterance. Needs >= 1 frame.
- utterance labels: `num_frames` frames. Longer utterances are cropped (centrally for eval,
  at a random offset in training); shorter ones are padded with zeros at both ends (after the
  normalisation, so zero = the utterance's mean feature). Needs >= 1 frame.

Bad audio (empty file, corrupt header, not a WAV, not 16-bit PCM, shorter than 400 samples at
16 kHz = one 25 ms window, NaN/inf samples after resampling, bad alignment) is skipped and counted
by path in ``dataset.bad_data`` (`bad_data.guarded_map`), or raises `BadExampleError` naming the
file with ``on_error="raise"``. 16-bit PCM cannot hold NaN/inf; the check is a safety net.

TFDS: ``speech_commands`` (spec "speech_commands") is read from a copy prepared offline in
``data_dir`` (`tfds_source.tfds_audio_dataset`): int16 mono samples at 16 kHz, utterance labels
(the TFDS class names), the same features and windows; a bad example is named by its TFDS id
(record file and index) in `bad_data`.
"""

import math
import os

import tensorflow as tf

from pipelines import bad_data, files, subsets
from pipelines.core import _check_size, _shard, _with_seeds

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms
FRAME_STEP = 160  # 10 ms
FFT_LENGTH = 512
NUM_MEL = 64
LOWER_HZ = 20.0
UPPER_HZ = 8000.0
LOG_FLOOR = 1e-6
NORM_EPSILON = 1e-5
DELTA_WIDTH = 2
CONTEXT = 49
UTTERANCE_FRAMES = 98  # 1 s
ALIGNMENT_SLACK = 2
SHUFFLE_BUFFER = 1000  # windows or speech_commands utterances, ~32-38 kB each
RESAMPLE_TAPS = 65  # odd
AUDIO_EXTENSIONS = (".wav",)
LABEL_MODES = ("utterance", "frame")


# ---------------------------------------------------------------------------------- audio


def mono(audio):
    """[samples, channels] -> [samples], channels averaged."""
    return tf.reduce_mean(audio, axis=-1)


def _lowpass(signal, cutoff):
    """Hann-windowed sinc low-pass; `cutoff` in cycles per sample (< 0.5), may be a tensor."""
    half = RESAMPLE_TAPS // 2
    k = tf.range(-half, half + 1, dtype=tf.float32)
    taps = 2.0 * cutoff * _sinc(2.0 * cutoff * k)
    taps *= 0.5 + 0.5 * tf.cos(math.pi * k / (half + 1))
    taps /= tf.reduce_sum(taps)
    padded = tf.pad(signal, [[half, half]])
    out = tf.nn.conv1d(padded[None, :, None], taps[:, None, None], stride=1, padding="VALID")
    return out[0, :, 0]


def _sinc(x):
    safe = tf.where(tf.equal(x, 0.0), tf.ones_like(x), x)
    return tf.where(tf.equal(x, 0.0), tf.ones_like(x), tf.sin(math.pi * safe) / (math.pi * safe))


def resample(signal, rate, target=SAMPLE_RATE):
    """Mono float signal at `rate` Hz (scalar, may be a tensor) -> `target` Hz: anti-alias
    low-pass when downsampling, then linear interpolation. Output length floor(n * target /
    rate)."""
    signal = tf.convert_to_tensor(signal, tf.float32)
    rate = tf.cast(rate, tf.float64)
    ratio = rate / target  # input samples per output sample

    def convert():
        x = tf.cond(ratio > 1.0,
                    lambda: _lowpass(signal, tf.cast(0.45 / ratio, tf.float32)),
                    lambda: signal)
        n = tf.shape(x, out_type=tf.int64)[0]
        out_len = tf.cast(tf.floor(tf.cast(n, tf.float64) / ratio), tf.int64)
        pos = tf.cast(tf.range(out_len), tf.float64) * ratio
        left = tf.minimum(tf.cast(tf.floor(pos), tf.int64), tf.maximum(n - 1, 0))
        right = tf.minimum(left + 1, tf.maximum(n - 1, 0))
        frac = tf.cast(pos - tf.cast(left, tf.float64), tf.float32)
        return tf.gather(x, left) * (1.0 - frac) + tf.gather(x, right) * frac

    return tf.cond(tf.equal(rate, float(target)), lambda: signal, convert)


def decode_audio(contents):
    """WAV bytes -> (mono 16 kHz float32 waveform in [-1, 1], original sample rate)."""
    audio, rate = tf.audio.decode_wav(contents)
    return resample(mono(audio), rate), rate


def audio_problem(waveform):
    """"" for a usable waveform, else why not (too short for one window, non-finite)."""
    n = tf.shape(waveform)[0]
    short = tf.strings.format("audio too short: {} samples at 16 kHz, a 25 ms window needs {}",
                              (n, FRAME_LENGTH))
    finite = tf.reduce_all(tf.math.is_finite(waveform))
    return tf.where(n < FRAME_LENGTH, short,
                    tf.where(finite, "", "audio has NaN or infinite samples"))


# ------------------------------------------------------------------------------- features


def log_mel(waveform):
    """16 kHz waveform [n] (n >= 400) -> log-mel [T, 64]."""
    stft = tf.signal.stft(waveform, FRAME_LENGTH, FRAME_STEP, FFT_LENGTH,
                          window_fn=tf.signal.hann_window, pad_end=False)
    power = tf.square(tf.abs(stft))
    weights = tf.signal.linear_to_mel_weight_matrix(NUM_MEL, FFT_LENGTH // 2 + 1, SAMPLE_RATE,
                                                    LOWER_HZ, UPPER_HZ)
    return tf.math.log(tf.matmul(power, weights) + LOG_FLOOR)


def deltas(features, width=DELTA_WIDTH):
    """Regression deltas along axis 0 ([T, ...], T >= 1), edge frames repeated."""
    features = tf.convert_to_tensor(features, tf.float32)
    t = tf.shape(features)[0]
    index = tf.clip_by_value(tf.range(-width, t + width), 0, t - 1)
    padded = tf.gather(features, index)
    total = tf.zeros_like(features)
    for k in range(1, width + 1):
        total += k * (padded[width + k:width + k + t] - padded[width - k:width - k + t])
    return total / (2.0 * sum(k * k for k in range(1, width + 1)))


def normalize(features):
    """Per-utterance mean/variance normalisation over time (axis 1 of [64, T, 3])."""
    mean, var = tf.nn.moments(features, axes=[1], keepdims=True)
    return (features - mean) * tf.math.rsqrt(var + NORM_EPSILON)


def features_from_waveform(waveform, normalized=True):
    """16 kHz waveform -> [64, T, 3] float32: log-mel, delta, delta-delta."""
    mel = log_mel(waveform)
    d1 = deltas(mel)
    d2 = deltas(d1)
    stacked = tf.transpose(tf.stack([mel, d1, d2], axis=-1), [1, 0, 2])
    return normalize(stacked) if normalized else stacked


def num_frames_of(num_samples):
    return 1 + (num_samples - FRAME_LENGTH) // FRAME_STEP


# -------------------------------------------------------------------------------- windows


def context_windows(features, context=CONTEXT):
    """[64, T, C] -> [T, 64, context, C]: a window centred on every frame, edges repeated."""
    half = context // 2
    t = tf.shape(features)[1]
    index = tf.clip_by_value(tf.range(-half, t + half), 0, t - 1)
    padded = tf.gather(features, index, axis=1)
    framed = tf.signal.frame(padded, context, 1, axis=1)  # [64, T, context, C]
    return tf.transpose(framed, [1, 0, 2, 3])


def fixed_window(features, num_frames, seed=None):
    """[64, T, C] -> [64, num_frames, C]: crop (central, or random with a stateless `seed`) or
    zero-pad at both ends."""
    t = tf.shape(features)[1]
    extra = tf.maximum(t - num_frames, 0)
    if seed is None:
        start = extra // 2
    else:
        start = tf.random.stateless_uniform([], seed, 0, extra + 1, tf.int32)
    cropped = features[:, start:start + num_frames]
    missing = num_frames - tf.shape(cropped)[1]
    before = missing // 2
    padded = tf.pad(cropped, [[0, 0], [before, missing - before], [0, 0]])
    return tf.ensure_shape(padded, [features.shape[0], num_frames, features.shape[2]])


def window_frames(labels, num_frames=None):
    """Frames per window: `CONTEXT` (49) for frame labels, `num_frames` (default
    `UTTERANCE_FRAMES`, 98) for utterance labels. Raises for another length with frame labels."""
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
    if labels == "frame":
        if num_frames not in (None, CONTEXT):
            raise ValueError(f"frame labels use {CONTEXT}-frame context windows, got "
                             f"num_frames={num_frames!r}")
        return CONTEXT
    return UTTERANCE_FRAMES if num_frames is None else num_frames


def parse_alignment(text):
    """Alignment file contents -> int32 frame labels."""
    tokens = tf.strings.split(tf.strings.strip(text))
    return tf.strings.to_number(tokens, tf.int32)


# -------------------------------------------------------------------------------- sources


def parse_speech_spec(spec):
    """"speech:PATH" or a plain PATH -> ("folder", PATH); "speech_commands" -> ("speech_commands",
    None) (the prepared TFDS data set)."""
    spec = os.fspath(spec)
    if spec == "speech_commands":
        return "speech_commands", None
    kind, sep, rest = spec.partition(":")
    if sep and kind == "speech":
        if not rest:
            raise ValueError("speech spec needs a path: speech:PATH")
        return "folder", rest
    return "folder", spec


def list_speech_folder(root, split):
    """`root/split/<label>/*.wav` -> (paths, labels, class_names), as image folders."""
    return files.list_class_folder(root, split, AUDIO_EXTENSIONS, what="speech",
                                   item="<name>.wav")


def alignment_path(wav_path):
    return os.path.splitext(wav_path)[0] + ".ali"


def _read_wav(path):
    waveform, _ = decode_audio(tf.io.read_file(path))
    return waveform


def _pcm16(samples):
    """Integer PCM samples as stored by TFDS (int16 for speech_commands) -> float in [-1, 1]."""
    return tf.cast(samples, tf.float32) / 32768.0


def _safe_features(waveform):
    """(features of a waveform made computable even when it is bad, its problem or "")."""
    problem = audio_problem(waveform)
    safe = tf.pad(waveform, [[0, tf.maximum(FRAME_LENGTH - tf.shape(waveform)[0], 0)]])
    safe = tf.where(tf.math.is_finite(safe), safe, 0.0)
    return features_from_waveform(safe), problem


def _utterance_fn(num_frames, training, to_waveform=_read_wav):
    """(payload, label[, seed]) -> ((window, label), problem); `to_waveform` turns the payload
    (a WAV path, or stored samples) into a 16 kHz waveform."""

    def fn(payload, label, *seed):
        features, problem = _safe_features(to_waveform(payload))
        window = fixed_window(features, num_frames, seed[0] if training else None)
        return (window, tf.cast(label, tf.int32)), problem

    return fn


def _frame_fn(num_classes):
    def fn(path, ali_path):
        features, problem = _safe_features(_read_wav(path))
        labels = parse_alignment(tf.io.read_file(ali_path))
        frames = tf.shape(features)[1]
        count = tf.shape(labels)[0]
        keep = tf.minimum(frames, count)
        mismatch = tf.strings.format("alignment has {} labels for {} frames", (count, frames))
        problem = tf.where(
            (problem == "") & (tf.abs(frames - count) > ALIGNMENT_SLACK), mismatch, problem)
        if num_classes is not None:
            bad = tf.reduce_any((labels < 0) | (labels >= num_classes))
            problem = tf.where((problem == "") & bad,
                               f"alignment label outside [0, {num_classes})", problem)
        problem = tf.where((problem == "") & (keep < 1), "alignment is empty", problem)
        keep = tf.maximum(keep, 1)  # a bad example still needs computable outputs
        windows = context_windows(features[:, :keep])
        return (windows, labels[:keep]), problem

    return fn


def get_speech_dataset(
    path,
    split,
    batch_size,
    training,
    labels="utterance",
    num_frames=None,
    on_error="skip",
    seed=None,
    input_context=None,
    *,
    data_dir=None,
    num_classes=None,
    shuffle_buffer=None,
    deterministic=False,
    drop_remainder=None,
    repeat=False,
    subset=None,
):
    """A batched dataset of (features float32 [B, 64, T, 3], int32 labels [B]).

    Args:
        path: "speech:PATH" or PATH, holding PATH/<split>/<label>/<name>.wav (see module doc),
            or "speech_commands": the TFDS data set prepared in `data_dir` (12 classes: ten
            words, _silence_, _unknown_; splits train, validation ("val"), test).
        split: the split folder name ("train", "val", ...) or TFDS split.
        batch_size: global batch; per-replica share with `input_context`.
        training: shuffle (files, and windows for frame labels) and random crops.
        labels: "utterance" (folder class; T = num_frames) or "frame" (alignment files;
            T = 49, one window per frame).
        num_frames: utterance window length in frames (default 98 ~ 1 s); frame labels take
            only 49 (or None).
        on_error: "skip" (bad files counted by path in `dataset.bad_data`) or "raise".
        seed: reproducible shuffling and crops.
        input_context: `tf.distribute.InputContext`: each input pipeline reads every n-th
            file (TFDS: its own files), and uses the per-replica batch.
        data_dir: where "speech_commands" is prepared (nothing is downloaded).
        num_classes: frame labels only: labels outside [0, num_classes) are bad (default:
            unchecked, and `dataset.num_classes` is None).
        shuffle_buffer: windows in the frame-label shuffle buffer (each ~38 kB), or
            utterances of speech_commands (each ~32 kB); default 1000.
        deterministic: keep element order.
        drop_remainder: default True when training.
        repeat: repeat the examples indefinitely (reshuffled every pass) before batching, for
            training with a fixed number of steps per epoch: bad examples then never make an
            epoch run short.
        subset: a `pipelines.Subset(fraction, part)`: one part of a deterministic stratified
            split of the utterances (see `pipelines.subsets`; WAV folders: by class folder,
            also for frame labels; speech_commands: a per-class counter over the stored order,
            every input pipeline reading all files, `num_examples` None).

    Returns:
        The dataset with `bad_data` (a `BadDataReport`), `num_classes`, `class_names` and
        `num_examples` (utterances for utterance labels; None for frame labels, whose window
        count is only known after decoding).
    """
    bad_data.check_on_error(on_error)
    subsets.check(subset)
    num_frames = window_frames(labels, num_frames)
    for name, value in (("batch_size", batch_size), ("num_frames", num_frames)):
        _check_size(name, value)
    kind, root = parse_speech_spec(path)
    shuffle_buffer = shuffle_buffer or SHUFFLE_BUFFER
    batch = input_context.get_per_replica_batch_size(batch_size) if input_context else batch_size
    report = bad_data.BadDataReport(streaming=repeat)

    if kind == "speech_commands":
        if labels != "utterance":
            raise ValueError("speech_commands has one label per utterance: labels='utterance'")
        dataset, num_examples, class_names = _tfds_utterances(
            split, data_dir, training and subset is None, None if subset else input_context)
        classes, to_waveform = len(class_names), _pcm16
        if subset is not None:  # counted in stored order over all files, then sharded
            dataset = subsets.shard(subsets.keep(dataset, subset, lambda e: e[2], classes),
                                    input_context)
            num_examples = None
        if training:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    else:
        dataset, num_examples, class_names = _folder_examples(root, split, labels, training,
                                                              seed, input_context, subset)
        classes = len(class_names) if labels == "utterance" else num_classes
        to_waveform = _read_wav
    if repeat:
        dataset = dataset.repeat()
    if labels == "utterance":
        if training:
            dataset = _with_seeds(dataset, seed)
        fn = _utterance_fn(num_frames, training, to_waveform)
        dataset = bad_data.guarded_map(dataset, fn, on_error, report, deterministic=deterministic)
    else:
        fn = _frame_fn(num_classes)
        dataset = bad_data.guarded_map(dataset, fn, on_error, report, deterministic=deterministic)
        dataset = dataset.unbatch()
        if training:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch, drop_remainder=training if drop_remainder is None
                            else drop_remainder)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # speech_commands subsets count utterances in their stored order: TFDS's maps must keep it.
    options.deterministic = bool(deterministic) or (subset is not None and kind != "folder")
    dataset = dataset.with_options(options)
    dataset.bad_data = report
    dataset.num_classes = classes
    dataset.class_names = class_names if labels == "utterance" else None
    dataset.num_examples = num_examples
    return dataset


def _folder_examples(root, split, labels, training, seed, input_context, subset=None):
    """(dataset of (name, wav path, label or alignment path), utterances or None, class
    names) of a WAV folder (`subset`'s part of it), sharded and (when training) shuffled by
    file."""
    paths, class_labels, class_names = list_speech_folder(root, split)
    if subset is not None:
        keep = subsets.indices(class_labels, subset)
        paths, class_labels = [paths[i] for i in keep], [class_labels[i] for i in keep]
    if labels == "utterance":
        items = [paths, paths, class_labels]
    else:
        items = [paths, paths, [alignment_path(p) for p in paths]]
    dtypes = (tf.string, tf.string, tf.int32 if labels == "utterance" else tf.string)
    dataset = _shard(tf.data.Dataset.from_tensor_slices(
        tuple(tf.constant(x, d) for x, d in zip(items, dtypes))), input_context)
    if training:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return dataset, len(paths) if labels == "utterance" else None, class_names


def _tfds_utterances(split, data_dir, training, input_context):
    """(dataset of (name, int16 samples, label), utterances in the split, class names) of the
    prepared TFDS speech_commands; names are TFDS's example ids."""
    from pipelines import tfds_source

    if data_dir is None:
        raise ValueError("speech_commands needs data_dir (a prepared TFDS copy; nothing is "
                         "downloaded)")
    dataset, count, class_names, rate = tfds_source.tfds_audio_dataset(
        "speech_commands", split, data_dir, shuffle_files=training, input_context=input_context)
    if rate not in (None, SAMPLE_RATE):
        raise ValueError(f"speech_commands is stored at {rate} Hz, expected {SAMPLE_RATE}")
    return dataset, count, class_names
