"""Running an app with TensorFlow's and absl's INFO logs left out of its output.

TensorFlow's C++ code logs through absl before `TF_CPP_MIN_LOG_LEVEL` can apply ("oneDNN
custom operations are on", "Could not find cuda drivers"), and the TFLite converter prints
its settings ("fully_quantize: 0, ..."). None of it can be turned off from Python once
TensorFlow is imported, so `rerun_quietly` runs the app again in a child process and copies
its standard error through `is_noise`. Standard output, warnings, errors and tracebacks pass
unchanged. This module imports neither TensorFlow nor Keras.
"""

import logging
import os
import re
import signal
import subprocess
import sys

CHILD = "BL_KERAS_QUIET_CHILD"  # set in the child: it runs the app itself

NOISE = re.compile("|".join((
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ",  # absl C++ INFO lines
    r"E\d{4} [\d:.]+ +\d+ cuda_[\w.]+:\d+\] failed call to cuInit",  # no GPU
    r"fully_quantize: \d+, inference_type: ",  # the TFLite converter's settings
    r"INFO:(tensorflow|absl):",
    r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
)))


def is_noise(line):
    """Whether a line of standard error is an INFO log (or the CUDA probe on a machine
    without a GPU)."""
    return NOISE.match(line.strip()) is not None


def quiet_python_loggers():
    """absl's and TensorFlow's Python loggers at WARNING ("Assets written to: ...")."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


def _segments(buffer):
    """Splits off the complete lines (ending in \\n, or \\r for progress bars) of `buffer`:
    (lines, rest)."""
    lines, start = [], 0
    for match in re.finditer(rb"[\r\n]", buffer):
        lines.append(buffer[start:match.end()])
        start = match.end()
    return lines, buffer[start:]


def copy_filtered(source, target):
    """Copies the bytes of file descriptor `source` to the binary file `target` until EOF,
    leaving out the lines `is_noise` matches."""
    rest = b""
    while True:
        chunk = os.read(source, 65536)
        lines, rest = _segments(rest + chunk)
        if not chunk:
            lines, rest = [*lines, rest] if rest else lines, b""
        for line in lines:
            if not is_noise(line.decode("utf-8", "replace")):
                target.write(line)
        target.flush()
        if not chunk:
            return


def is_child():
    return os.environ.get(CHILD) == "1"


def rerun_quietly(module, argv):
    """Runs `python -m module argv[1:]` in a child process with standard error filtered and
    returns its exit status (SIGTERM and SIGINT are passed on to it)."""
    env = {**os.environ, CHILD: "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    child = subprocess.Popen([sys.executable, "-m", module, *argv[1:]], env=env,
                             stderr=subprocess.PIPE)

    def forward(signum, frame):
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        copy_filtered(child.stderr.fileno(), sys.stderr.buffer)
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
