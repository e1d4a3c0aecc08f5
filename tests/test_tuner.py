"""tuner/: budget-aware oracles on a toy space (no training), then the three real spaces."""

import csv
import json
import os

import harness
import keras
import numpy as np
import pytest

import pipelines
import tuner
from bl_keras import models, multires, profile, query_table, slimmable
from bl_keras.training import trainer
from tuner import oracles, spaces
from tuner.multires_space import MultiresSpace

RECIPE = trainer.TrainConfig(model=None, model_dir="", dataset="digits", batch_size=64,
                             eval_split="val", num_calibration_images=128, verbose=0)


class ToySpace(spaces.Space):
    """a in 1..6, b in 1..6; b >= 4 builds the same network as b = 4 (like ResNet-20's
    betas); MACs a * b M; top-1 peaks at (4, 3); (2, 2) fails like a NaN loss."""

    name = "toy"
    clears_session = False  # builds no model

    def __init__(self, a=range(1, 7), b=range(1, 7)):
        super().__init__(RECIPE, {"a": list(a), "b": list(b)})
        self.runs = []

    def network_key(self, values):
        return f"{values['a']}-{min(values['b'], 4)}"

    def cost(self, values, budget):
        return spaces.Cost(values["a"] * min(values["b"], 4) * 1_000_000)

    def run_trial(self, values, trial_dir, budget):
        self.runs.append(dict(values))
        if values == {"a": 2, "b": 2}:
            raise FloatingPointError("loss became nan at epoch 1, step 3")
        a, b = values["a"], min(values["b"], 4)
        return {"val_top1": 0.9 - 0.02 * (a - 4) ** 2 - 0.03 * (b - 3) ** 2,
                "macs": self.cost(values, budget).macs}

    def test_top1(self, values, trial_dir):
        return 0.5


def _search(tmp_path, space=None, name="p", **kwargs):
    space = space or ToySpace()
    kwargs.setdefault("progress", False)
    made = tuner.search(space, directory=str(tmp_path), project_name=name, **kwargs)
    return space, made


@pytest.mark.parametrize("oracle", ["random", "grid", "bayesian"])
def test_oracles_propose_only_feasible_untried_networks_until_none_is_left(tmp_path, oracle):
    budget = tuner.Budget(max_macs=8e6)
    space, made = _search(tmp_path, budget=budget, oracle=oracle, max_trials=30, seed=0)
    feasible = {space.key(v) for v in space.candidates() if space.cost(v, budget).macs <= 8e6}
    keys = [space.key(t["hyperparameters"]) for t in made["trials"]]
    assert sorted(keys) == sorted(feasible)  # each feasible network once, nothing else
    assert all(t["macs"] <= 8e6 for t in made["trials"])
    assert len(space.runs) == len(feasible) < 30  # no trial spent on an infeasible one
    assert "have been tried" in made["message"]


def test_grid_is_exhaustive_in_grid_order_and_seed_zero_is_repeatable(tmp_path):
    space, made = _search(tmp_path, name="grid", budget=tuner.Budget(max_macs=4e6),
                          oracle="grid", max_trials=4, seed=0)
    assert [t["hyperparameters"] for t in made["trials"]] == [
        {"a": 1, "b": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 3}, {"a": 1, "b": 4}]
    runs = [_search(tmp_path, name=f"r{i}", oracle=oracle, max_trials=6, seed=seed)[1]
            for i, (oracle, seed) in enumerate([("random", 0), ("random", 0), ("random", 1),
                                                ("bayesian", 0), ("bayesian", 0)])]
    order = [[t["hyperparameters"] for t in r["trials"]] for r in runs]
    assert order[0] == order[1] != order[2]
    assert order[3] == order[4]
    assert runs[0]["seed"] == 0


def test_bayesian_finds_the_best_configuration_in_a_budget_in_a_third_of_the_grid(tmp_path):
    budget = tuner.Budget(max_macs=15e6)
    space = ToySpace()
    feasible = {space.key(v): v for v in space.candidates()
                if space.cost(v, budget).macs <= 15e6 and v != {"a": 2, "b": 2}}
    best = max(space.run_trial(v, None, budget)["val_top1"] for v in feasible.values())
    for seed in (0, 1, 2):
        _, made = _search(tmp_path, name=f"b{seed}", budget=budget, oracle="bayesian",
                          max_trials=len(space.candidates()) // 3, seed=seed)
        assert made["best"]["val_top1"] == pytest.approx(best)


def test_bayesian_explores_first_and_spends_its_last_trials_on_the_predicted_best():
    oracle = oracles.make_oracle("bayesian", ToySpace(), tuner.Budget(), max_trials=10, seed=0)
    initial = oracle.initial_points()
    assert initial == 6  # 3 per hyperparameter
    betas = []
    for started in range(initial, 10):
        oracle.trials = dict.fromkeys(map(str, range(started)))
        betas.append(oracle.exploration(initial))
    assert betas[0] == oracle.beta > 0 and betas[-1] == 0
    assert betas == sorted(betas, reverse=True) and len(set(betas)) == len(betas)


def test_no_feasible_configuration_is_a_clear_error_before_any_trial(tmp_path):
    space = ToySpace()
    with pytest.raises(tuner.NoFeasibleConfiguration, match=r"cheapest, \{'a': 1, 'b': 1\}"):
        _search(tmp_path, space, budget=tuner.Budget(max_macs=0.5e6), max_trials=3)
    assert space.runs == []
    with pytest.raises(ValueError, match="max_trials"):
        _search(tmp_path, max_trials=0)
    with pytest.raises(ValueError, match="oracle must be one of"):
        _search(tmp_path, oracle="hyperband")
    with pytest.raises(ValueError, match="max_macs must be a positive"):
        tuner.Budget(max_macs=-1)


def test_a_failed_trial_is_recorded_with_its_reason_and_the_search_goes_on(tmp_path):
    space = ToySpace(a=[1, 2, 3], b=[1, 2, 3])
    _, made = _search(tmp_path, space, oracle="grid", max_trials=9, seed=0)
    failed = [t for t in made["trials"] if t["status"] == "FAILED"]
    assert [t["hyperparameters"] for t in failed] == [{"a": 2, "b": 2}]
    assert failed[0]["reason"] == "FloatingPointError: loss became nan at epoch 1, step 3"
    assert failed[0]["macs"] == 4_000_000  # known before training
    assert len(made["trials"]) == 9 and len(space.runs) == 9
    assert sum(t["status"] == "COMPLETED" for t in made["trials"]) == 8


def test_result_has_trials_best_and_pareto_as_json_csv_and_png(tmp_path):
    output = tmp_path / "out" / "result.json"
    _, made = _search(tmp_path, budget=tuner.Budget(max_macs=12e6), oracle="grid",
                      max_trials=40, output=str(output))
    saved = json.loads(output.read_text())
    assert saved == json.loads(json.dumps(made))
    trial = saved["trials"][0]
    assert {"hyperparameters", "macs", "val_top1", "status", "params", "latency_ms",
            "reason"} <= set(trial)
    done = [t for t in saved["trials"] if t["status"] == "COMPLETED"]
    best = max(done, key=lambda t: t["val_top1"])
    assert saved["best"]["hyperparameters"] == best["hyperparameters"] == {"a": 4, "b": 3}
    assert saved["best"]["test_top1"] == 0.5
    front = saved["pareto"]
    for t in done:  # every completed trial is on the front or dominated by a front trial
        on = any(p["trial_id"] == t["trial_id"] for p in front)
        dominated = any(p["macs"] <= t["macs"] and p["val_top1"] >= t["val_top1"]
                        and p["trial_id"] != t["trial_id"] for p in front)
        assert on or dominated
    for p, q in zip(front, front[1:]):
        assert p["macs"] < q["macs"] and p["val_top1"] < q["val_top1"]
    with open(tmp_path / "out" / "result.csv") as f:
        assert len(list(csv.DictReader(f))) == len(saved["trials"])
    assert (tmp_path / "out" / "result.png").stat().st_size > 10_000


def test_a_search_run_again_keeps_its_trials_and_continues(tmp_path):
    space, first = _search(tmp_path, oracle="random", max_trials=3, seed=5)
    again = ToySpace()
    _, second = _search(tmp_path, again, oracle="random", max_trials=5, seed=5)
    keys = ("trial_id", "hyperparameters", "status", "val_top1", "macs")
    assert [{k: t[k] for k in keys} for t in second["trials"][:3]] == [
        {k: t[k] for k in keys} for t in first["trials"]]
    assert len(second["trials"]) == 5 and len(again.runs) == 2


# The real spaces.


def test_bl_space_tries_networks_once_and_counts_their_macs_before_training():
    space = spaces.BigLittleSpace(trainer.TrainConfig(model="bl_resnet20_cifar", model_dir=""),
                                  alpha=(2,), beta=(1, 2, 3), merge=("add",))
    values = space.candidates()
    assert space.choices == {"alpha": (2,), "beta": (1, 2, 3), "merge": ("add",)}
    keys = [space.key(v) for v in values]
    assert keys[1] == keys[2] != keys[0]  # 3-block stages: every beta >= 2 is one block
    cost = space.cost_of(values[0], tuner.Budget())
    assert cost.macs == profile.count_macs(
        models.get("bl_resnet20_cifar", alpha=2, beta=1, merge="add"), (32, 32, 3))
    with pytest.raises(ValueError, match="searches a Big-Little model .*, not 'resnet20_cifar'"):
        spaces.BigLittleSpace(trainer.TrainConfig(model="resnet20_cifar", model_dir=""))
    with pytest.raises(ValueError, match=r"does not fit model 'bl_resnet20_cifar' \(alpha=64"):
        spaces.BigLittleSpace(trainer.TrainConfig(model="bl_resnet20_cifar", model_dir=""),
                              alpha=(64,), beta=(1,), merge=()).key({"alpha": 64, "beta": 1})
    with pytest.raises(ValueError, match="alpha=64.*big branch|does not fit.*alpha=64"):
        spaces.BigLittleSpace(trainer.TrainConfig(model="bl_resnet20_cifar", model_dir=""),
                              alpha=(2, 64), beta=(1,), merge=()).candidates()
    with pytest.raises(ValueError, match="unknown model 'bl_nonet'"):
        spaces.BigLittleSpace(trainer.TrainConfig(model="bl_nonet", model_dir=""))
    with pytest.raises(ValueError, match="searches alpha, beta, merge; not \\['levels'\\]"):
        tuner.make_space("bl", trainer.TrainConfig(model="bl_resnet20_cifar", model_dir=""),
                         choices={"levels": [2]})


@pytest.fixture(scope="module")
def slimmable_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("slim") / "tiny.keras"
    harness.tiny_slimmable_model(classes=10).save(path)
    plain = tmp_path_factory.mktemp("plain") / "plain.keras"
    models.get("resnet20_cifar").save(plain)
    return str(path), str(plain)


def test_bl_space_leaves_out_the_combinations_the_builder_rejects():
    """The default merges with alpha=1: concat would leave the big branch no channels."""
    space = spaces.BigLittleSpace(trainer.TrainConfig(model="bl_resnet20_cifar", model_dir=""),
                                  alpha=(1, 2), beta=(1,))
    assert space.choices["merge"] == ("add", "concat")
    assert space.candidates() == [{"alpha": 1, "beta": 1, "merge": "add"},
                                  {"alpha": 2, "beta": 1, "merge": "add"},
                                  {"alpha": 2, "beta": 1, "merge": "concat"}]
    [(values, reason)] = space.left_out
    assert values == {"alpha": 1, "beta": 1, "merge": "concat"}
    assert "leaves the big branch no channels" in str(reason)
    assert space.describe()["left_out"][0]["hyperparameters"] == values


def test_width_resolution_trial_is_the_query_table_row_and_bad_models_are_refused(
        slimmable_path):
    path, plain = slimmable_path
    space = tuner.make_space("width_resolution", RECIPE, model_path=path,
                             choices={"width": "0.5,1.0", "resolution": [24, 32]})
    assert space.choices == {"width": (0.5, 1.0), "resolution": (24, 32)}
    costs = {(v["width"], v["resolution"]): space.cost_of(v, tuner.Budget()).macs
             for v in space.candidates()}  # before any calibration
    # The whole table: its rows do not depend on the order they were calibrated in.
    table = query_table.query_table(space.model, "digits", [0.5, 1.0], [24, 32], split="val",
                                    num_calibration_images=128, latency=False, progress=False)
    def outputs(width, resolution):  # with the statistics the model holds for the pair
        images = pipelines.get_dataset("digits", "val", resolution, 16, training=False)
        sub = slimmable.subnetwork(space.model, width, resolution=(resolution, resolution))
        return keras.ops.convert_to_numpy(sub(next(iter(images))[0], training=False))

    from_table = {(r["width"], r["resolution"]): outputs(r["width"], r["resolution"])
                  for r in table}
    for row in reversed(table):
        values = {"width": row["width"], "resolution": row["resolution"]}
        metrics = space.run_trial(values, None, tuner.Budget())  # calibrates it again
        assert metrics["val_top1"] == row["top1"], values
        assert metrics["macs"] == row["macs"] == costs[row["width"], row["resolution"]]
        np.testing.assert_allclose(outputs(**values), from_table[row["width"], row["resolution"]],
                                   atol=1e-6, err_msg=str(values))
    with pytest.raises(ValueError, match="has no slimmable layers"):
        tuner.make_space("width_resolution", RECIPE, model_path=plain)
    with pytest.raises(ValueError, match="does not exist"):
        tuner.make_space("width_resolution", RECIPE, model_path="/no/such.keras")
    with pytest.raises(ValueError, match="outside the range"):
        tuner.make_space("width_resolution", RECIPE, model_path=path,
                         choices={"width": [0.1]})
    with pytest.raises(ValueError, match="needs model_path"):
        tuner.make_space("width_resolution", RECIPE)


def test_clearing_the_session_between_trials_keeps_the_dtype_policy():
    try:
        spaces.clear_session("bfloat16")
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_memory_stays_flat_over_many_trials(tmp_path, slimmable_path):
    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

    def run(trials):
        space = tuner.make_space("width_resolution", RECIPE, model_path=slimmable_path[0],
                                 choices={"width": "0.25:1.0:0.05", "resolution": [32]})
        tuner.search(space, oracle="grid", max_trials=trials, directory=str(tmp_path),
                     project_name="mem", progress=False)
        return rss_mb()

    run(3)
    after_4 = run(4)
    after_12 = run(12)
    assert after_12 - after_4 < 50, (after_4, after_12)  # 8 more trials


MULTIRES_RECIPE = trainer.TrainConfig(
    model="multires_10x64", model_dir="", dataset="digits", batch_size=32, eval_split="val",
    epochs=1, steps_per_epoch=2, lr=0.1, verbose=0, model_kwargs={"filters": 8, "depth": 4})


def test_multires_prunes_to_the_smallest_threshold_that_fits():
    space = MultiresSpace(MULTIRES_RECIPE, levels=(3,), pool=("max",), upsample=("nearest",))
    model = space.build_values(space.candidates()[0])
    rng = np.random.default_rng(0)
    for layer in multires.multires_layers(model):
        layer.mixing_logits.assign(rng.normal(size=layer.mixing_logits.shape) * 2)
    weights = multires.mixing_weights(model)
    thresholds = sorted({float(w) for w in weights.flat if w > 0})
    macs = [profile.count_macs(multires.prune(model, threshold=t), (32, 32, 3))
            for t in thresholds]
    budget = tuner.Budget(max_macs=(macs[2] + macs[3]) / 2)  # fits from the 4th threshold on
    assert macs[2] > budget.max_macs >= macs[3]
    pruned, threshold, ok, got = space.prune_to_budget(model, budget)
    assert (threshold, ok, got) == (thresholds[3], True, macs[3])
    one_level = profile.count_macs(multires.prune(model, keep_best=True), (32, 32, 3))
    if one_level < macs[-1]:
        assert space.prune_to_budget(model, tuner.Budget(max_macs=one_level))[1] == "keep_best"
    _, threshold, ok, _ = space.prune_to_budget(model, tuner.Budget(max_macs=1))
    assert threshold == "keep_best" and not ok
    assert space.prune_to_budget(model, tuner.Budget())[1] == 0.1  # no budget: the paper's
    with pytest.raises(ValueError, match="searches a multi-resolution model"):
        MultiresSpace(trainer.TrainConfig(model="bl_resnet20_cifar", model_dir=""))
    with pytest.raises(ValueError, match=r"does not fit model 'multires_10x64' \(levels=9"):
        MultiresSpace(MULTIRES_RECIPE, levels=(9,), pool=("max",), upsample=("nearest",))
    keras.backend.clear_session()


def test_multires_trial_searches_prunes_and_fine_tunes(tmp_path):
    recipe = MULTIRES_RECIPE
    space = tuner.make_space("multires", recipe, choices={
        "levels": [2], "pool": ["avg"], "upsample": ["nearest"]}, fine_tune_epochs=1)
    made = tuner.search(space, budget=tuner.Budget(max_macs=2.5e6), oracle="grid",
                        max_trials=2, directory=str(tmp_path), progress=False)
    (trial,) = made["trials"]
    assert trial["status"] == "COMPLETED" and trial["macs"] <= 2.5e6
    trial_dir = tmp_path / "multires" / "trial_0"
    for name in ("search/model.keras", "pruned.keras", "finetune/model.keras", "mixing.png"):
        assert (trial_dir / name).exists(), name
    model = tuner.build_best(made)
    assert profile.count_macs(model, (32, 32, 3)) == trial["macs"]
    assert made["best"]["test_top1"] is not None


def test_latency_budget_is_measured_once_per_configuration_and_cached(
        tmp_path, slimmable_path, monkeypatch):
    def make():
        return tuner.make_space("width_resolution", RECIPE, model_path=slimmable_path[0],
                                choices={"width": "0.25,1.0", "resolution": [24]},
                                directory=str(tmp_path), project_name="lat")

    made = tuner.search(make(), budget=tuner.Budget(max_latency_ms=1000), oracle="grid",
                        max_trials=2, directory=str(tmp_path), project_name="lat",
                        progress=False)
    cache = json.loads((tmp_path / "lat" / "latency_cache.json").read_text())
    assert sorted(cache) == ["width0.25_res24", "width1_res24"]
    assert sorted(t["latency_ms"] for t in made["trials"]) == sorted(cache.values())
    assert made["pareto_latency"] and made["pareto_latency"][0]["latency_ms"] > 0
    assert (tmp_path / "lat" / "result.png").stat().st_size > 10_000  # with the query table
    monkeypatch.setattr(spaces.evaluation, "latency_ms", lambda *a, **k: pytest.fail("again"))
    fastest = min(cache.values())
    with pytest.raises(tuner.NoFeasibleConfiguration, match="ms batch-1 TFLite latency"):
        tuner.search(make(), budget=tuner.Budget(max_latency_ms=fastest / 2), max_trials=2,
                     directory=str(tmp_path), project_name="lat", progress=False)
