"""bl_keras: Big-Little Net, multi-resolution convolution and slimmable networks for Keras 3."""

from setuptools import find_packages, setup

setup(
    name="bl_keras",
    version="0.1.0",
    description="Efficient multi-resolution convolutional networks (Big-Little Net) for Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["bl_keras", "bl_keras.*", "pipelines", "pipelines.*",
                                    "tuner", "tuner.*", "apps", "apps.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.13",
        "keras-tuner>=1.4",
        # keras-tuner imports tensorboard, which TF 2.21 no longer pulls in.
        "tensorboard>=2.20",
        "tensorflow-datasets>=4.9",
        "absl-py>=2.0",
        "ai-edge-litert>=1.2",
        # ONNX export (tf2onnx) and ONNX Runtime as a runtime of bl_keras.timing.
        "tf2onnx>=1.17",
        "onnx>=1.17",
        "onnxruntime>=1.20",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "scikit-learn>=1.3",
        "numpy>=1.26",
    ],
    extras_require={
        # jax[cpu]: the tests of the JAX backend (tests/on_jax, run by tests/test_backends.py).
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "filelock>=3.0", "ruff>=0.5", "jax[cpu]>=0.4.34"],
        # To read official PyTorch checkpoints (.pth / .pth.tar) and to export the official
        # models to ONNX for the speed comparison (bl_keras.official).
        "torch": ["torch>=2.0"],
    },
)
