import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"


@pytest.fixture(scope="session")
def reference_dir():
    if not REFERENCE.is_dir():
        pytest.fail(f"reference data not found at {REFERENCE} (shared/ beside the repo)")
    return REFERENCE


def made_once(tmp_path_factory, name, make):
    """Path of a file that `make(path)` writes once per test session, whichever pytest-xdist
    worker asks first; the others wait for it and reuse it (a module fixture is otherwise set
    up again on every worker that runs one of the module's tests)."""
    import filelock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's directory, shared by its workers
    path = root / name
    with filelock.FileLock(f"{path}.lock"):
        if not path.exists():
            partial = root / f"partial_{name}"
            make(partial)
            partial.rename(path)
    return path
