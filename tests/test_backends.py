"""The same models on the TensorFlow and JAX backends.

A backend is chosen once per process, so this test (TensorFlow) saves one model of every family,
runs tests/on_jax/test_jax_backend.py in a JAX subprocess (which loads them, compares outputs
and MACs, saves them again under JAX with JAX's outputs, trains with `jit_compile=True` and on
tf.data, checks the core without TensorFlow), then loads the JAX files here and compares. The GPU
benchmark's CPU smoke test runs in a second JAX process.
"""

import os
import subprocess
import sys

import backend_models
import keras

FAST_XLA_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_on_jax(test_file, **env_vars):
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=ROOT, **env_vars)
    # Loading a .keras under JAX compiles each weight shape's random initializer (then
    # overwritten) with XLA; its cheapest optimisation level saves a third of the test's time.
    env.setdefault("XLA_FLAGS", FAST_XLA_COMPILE)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         os.path.join(ROOT, "tests", "on_jax", test_file)],
        env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    summary = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, summary
    assert " passed" in result.stdout and "skipped" not in result.stdout, summary


def test_tensorflow_and_jax_agree(tmp_path):
    assert keras.backend.backend() == "tensorflow"
    from_tf, to_tf = str(tmp_path / "from_tf"), str(tmp_path / "to_tf")
    backend_models.save_all(from_tf)
    _run_on_jax("test_jax_backend.py", BL_KERAS_FROM_TF=from_tf, BL_KERAS_TO_TF=to_tf)
    backend_models.check_all(to_tf)


def test_gpu_benchmark_smoke():
    """benchmarks/gpu.py --smoke on CPU (in its own JAX process, beside the test above)."""
    _run_on_jax("test_gpu_benchmark.py")
