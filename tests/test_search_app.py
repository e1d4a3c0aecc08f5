"""`python -m apps.search`: a bl search end to end, a search killed with SIGTERM and run again,
and keras-tuner's chief/worker mode with two workers on localhost."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import harness
import pytest

import tuner
from bl_keras import profile

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _command(*flags):
    return [sys.executable, "-m", "apps.search", *flags]


def _run(*flags, env=ENV, timeout=400):
    run = subprocess.run(_command(*flags), capture_output=True, text=True, timeout=timeout,
                         env=env)
    return run


def test_bl_search_end_to_end(tmp_path):
    output = tmp_path / "bl.json"
    flags = ["--space=bl", "--model=bl_resnet20_cifar", "--alpha=4", "--beta=1,2,3",
             "--merge=add", "--oracle=grid", "--max_trials=5", "--epochs=1",
             "--steps_per_epoch=2", "--batch_size=32", "--lr=0.1", "--verbose=0", "--seed=0",
             f"--directory={tmp_path}"]
    run = _run(*flags, "--budget_macs=25.5e6", f"--output={output}")
    assert run.returncode == 0, run.stderr[-3000:]
    made = json.loads(output.read_text())
    # beta 1 (25.9 M MACs) is over the budget; betas 2 and 3 build one network: one trial.
    assert [t["hyperparameters"] for t in made["trials"]] == [
        {"alpha": 4, "beta": 2, "merge": "add"}]
    assert all(t["status"] == "COMPLETED" and t["macs"] <= 25.5e6 for t in made["trials"])
    assert made["message"].startswith("the search ended: all 1 configurations")
    assert made["best"]["test_top1"] is not None and made["pareto"]
    assert "| trial | alpha | beta | merge |" in run.stdout
    assert "--model=bl_resnet20_cifar --alpha=4 --beta=2 --merge=add" in made["train_command"]
    assert (tmp_path / "bl.csv").exists() and (tmp_path / "bl.png").exists()
    assert (tmp_path / "bl" / "trial_0" / "trial.json").exists()  # keras-tuner's project
    best = tuner.build_best(str(output))
    assert profile.count_macs(best, (32, 32, 3)) == made["best"]["macs"]
    bad = _run(*flags, "--budget_macs=1e6", "--project_name=none")
    assert bad.returncode != 0
    assert "no configuration of the bl space fits the budget (1 M MACs)" in bad.stderr
    assert not (tmp_path / "none" / "trial_0").exists()  # nothing trained


@pytest.fixture(scope="module")
def slimmable_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("slim") / "tiny.keras"
    harness.tiny_slimmable_model(classes=10).save(path)
    return str(path)


def _wr_flags(model_path, directory, trials):
    return ["--space=width_resolution", f"--model_path={model_path}",
            "--widths=0.25:1.0:0.05", "--resolutions=32,24", "--oracle=random", "--seed=3",
            f"--max_trials={trials}", "--num_calibration_images=512", "--batch_size=64",
            f"--directory={directory}"]


def _status(path):
    try:
        return json.loads(path.read_text())["status"]
    except (OSError, ValueError):
        return None


def test_search_killed_and_run_again_continues(tmp_path, slimmable_path):
    flags = _wr_flags(slimmable_path, tmp_path, 6)
    project = tmp_path / "width_resolution"
    proc = subprocess.Popen(_command(*flags), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 300
    while _status(project / "trial_2" / "trial.json") != "RUNNING":
        assert proc.poll() is None and time.time() < deadline, "no third trial started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == -signal.SIGTERM
    before = {i: (project / f"trial_{i}" / "trial.json").read_text() for i in (0, 1)}
    assert all(json.loads(text)["status"] == "COMPLETED" for text in before.values())
    run = _run(*flags)
    assert run.returncode == 0, run.stderr[-3000:]
    made = json.loads((project / "result.json").read_text())
    assert len(made["trials"]) == 6
    assert all(t["status"] == "COMPLETED" for t in made["trials"])
    for i, text in before.items():  # completed trials are kept, never rerun
        assert (project / f"trial_{i}" / "trial.json").read_text() == text
    reran = [line for line in run.stdout.splitlines() if line.startswith("trial ")]
    assert [line.split(":")[0] for line in reran] == ["trial 2", "trial 3", "trial 4",
                                                     "trial 5"]
    configs = [json.dumps(t["hyperparameters"], sort_keys=True) for t in made["trials"]]
    assert len(set(configs)) == 6


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chief_and_two_workers_on_localhost(tmp_path, slimmable_path):
    flags = _wr_flags(slimmable_path, tmp_path, 6)
    port = str(_free_port())
    procs = {}
    for tuner_id in ("chief", "tuner1", "tuner2"):
        env = {**ENV, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
               "KERASTUNER_ORACLE_PORT": port}
        procs[tuner_id] = subprocess.Popen(_command(*flags), stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True, env=env)
    outs = {k: p.communicate(timeout=400)[0] for k, p in procs.items()}
    for k, p in procs.items():
        assert p.returncode == 0, (k, outs[k][-3000:])
    made = json.loads((tmp_path / "width_resolution" / "result.json").read_text())
    assert len(made["trials"]) == 6
    assert all(t["status"] == "COMPLETED" for t in made["trials"])
    ran = {k: [line.split(":")[0] for line in outs[k].splitlines() if line.startswith("trial ")]
           for k in ("tuner1", "tuner2")}
    assert ran["tuner1"] and ran["tuner2"], ran  # both workers ran trials
    assert sorted(ran["tuner1"] + ran["tuner2"]) == [f"trial {i}" for i in range(6)]  # once each
    assert "| trial | width | resolution |" in outs["chief"]
