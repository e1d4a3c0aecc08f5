"""`search(...)`: a budgeted keras-tuner search over one of our spaces, its result (every
trial, the best under the budget, the Pareto fronts) as JSON, CSV and PNG, and
`build_best(result)`.

The trials live in keras-tuner's own project folder (`directory/project_name`): running the
same search again continues it (completed trials are kept, the interrupted one runs again),
and keras-tuner's chief/worker mode (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`,
`KERASTUNER_ORACLE_PORT`) spreads the trials over processes or hosts.
"""

import csv
import dataclasses
import json
import os
import traceback

from keras_tuner.src import errors
from keras_tuner.src.distribute import utils as dist_utils
from keras_tuner.src.engine import base_tuner
from keras_tuner.src.engine import trial as trial_module

from tuner import oracles, spaces
from tuner.budget import Budget, LatencyCache

SPACES = ("bl", "multires", "width_resolution")
COMPLETED, FAILED = trial_module.TrialStatus.COMPLETED, trial_module.TrialStatus.FAILED
METRICS = ("val_top1", "macs", "params", "latency_ms")
CSV_KEYS = ("trial_id", "status", "val_top1", "macs", "params", "latency_ms", "test_top1",
            "reason")


def make_space(name, recipe, *, model_path=None, choices=None, directory=None,
               project_name=None, fine_tune_epochs=None):
    """The search space `name` ("bl", "multires", "width_resolution") over `recipe` (a
    `trainer.TrainConfig` whose `model_dir` is unused) with `choices` (hyperparameter ->
    values; None: the space's defaults); `fine_tune_epochs` of the multires trials. Raises a
    ValueError, before any training, when the space does not fit the model."""
    if name not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {name!r}")
    choices = dict(choices or {})
    cache = LatencyCache(os.path.join(directory, project_name, "latency_cache.json")
                         if directory else None)
    if name == "width_resolution":
        if model_path is None:
            raise ValueError("the width_resolution space needs model_path: a trained "
                             "slimmable model (.keras)")
        _only(choices, ("width", "resolution"), name)
        return spaces.WidthResolutionSpace(model_path, recipe, widths=choices.get("width"),
                                           resolutions=choices.get("resolution"),
                                           latency_cache=cache)
    if model_path is not None:
        raise ValueError(f"model_path is for the width_resolution space; the {name} space "
                         "trains recipe.model")
    from bl_keras.training import trainer

    recipe.validate()
    classes = trainer.num_classes(recipe, trainer.check_usable(recipe))
    if name == "bl":
        _only(choices, ("alpha", "beta", "merge"), name)
        return spaces.BigLittleSpace(recipe, classes=classes, latency_cache=cache, **choices)
    from tuner.multires_space import MultiresSpace

    _only(choices, MultiresSpace.HYPERPARAMETERS, name)
    return MultiresSpace(recipe, classes=classes, latency_cache=cache,
                         fine_tune_epochs=fine_tune_epochs, **choices)


def _only(choices, allowed, space):
    unknown = sorted(set(choices) - set(allowed))
    if unknown:
        raise ValueError(f"the {space} space searches {', '.join(allowed)}; not {unknown}")


class SearchTuner(base_tuner.BaseTuner):
    """keras-tuner's BaseTuner running a `Space`'s trials; the session is cleared before each
    (the dtype policy set again) so memory stays flat over many trials, and a trial that
    fails is recorded with its reason while the search goes on."""

    def __init__(self, space, oracle, budget, directory, project_name):
        self.space, self.budget = space, budget
        super().__init__(oracle=oracle, hypermodel=space, directory=directory,
                         project_name=project_name, overwrite=False)

    def _populate_initial_space(self):
        hp = self.oracle.get_space()  # the hyperparameters, without building a model
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial, **unused):
        if self.space.clears_session:
            spaces.clear_session(self.space.recipe.mixed_precision)
        values = {k: trial.hyperparameters.values[k] for k in self.space.choices}
        metrics = self.space.run_trial(values, self.get_trial_dir(trial.trial_id),
                                       self.budget)
        print(f"trial {trial.trial_id}: " + ", ".join(
            f"{k} {_format(k, metrics.get(k))}" for k in METRICS if k in metrics))
        return metrics

    def _try_run_and_update_trial(self, trial, *args, **kwargs):
        try:
            self._run_and_update_trial(trial, *args, **kwargs)
            trial.status = COMPLETED
        except Exception as e:  # noqa: BLE001 (any failure is recorded; the search goes on)
            if isinstance(e, errors.FatalError):
                raise
            trial.status = FAILED
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            trial.message = f"{reason}\n\n{traceback.format_exc()}"
            print(f"trial {trial.trial_id} failed: {reason}")


def _format(key, value):
    if value is None:
        return "-"
    if key == "val_top1" or key == "test_top1":
        return f"{100 * value:.2f}%"
    if key == "macs":
        return f"{value / 1e6:.3f}M"
    if key == "params":
        return f"{int(value):,}"
    return f"{value:.3f} ms"


def search(space, *, budget=None, oracle="bayesian", max_trials=10, seed=None,
           directory="runs/search", project_name=None, output=None, progress=True):
    """Runs (or continues) a budgeted search and returns its result.

    Args:
        space: a `Space` (see `make_space`).
        budget: a `Budget` (None: no limit).
        oracle: "bayesian", "random" or "grid" (budget-aware, `tuner.oracles`).
        max_trials: trials to run in all (over budget configurations are never proposed,
            so none is spent on them; fewer run when fewer configurations fit).
        seed: makes the proposals repeatable (0 included).
        directory, project_name: keras-tuner's project folder (default project name: the
            space's name).
        output: where to write the result JSON (CSV and PNG beside it, same stem); None:
            `directory/project_name/result.json`.

    Returns:
        The result dict (see `result`), or None on a keras-tuner worker process (the chief
        writes the result).

    Raises:
        NoFeasibleConfiguration (a ValueError), before any training, when no configuration
        fits the budget.
    """
    budget = budget or Budget()
    project_name = project_name or space.name
    the_oracle = oracles.make_oracle(oracle, space, budget, max_trials, seed, progress)
    is_worker = dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle()
    if not is_worker:
        the_oracle.check_feasible()
    tuner = SearchTuner(space, the_oracle, budget, directory, project_name)
    tuner.search(verbose=1 if progress else 0)
    if is_worker:
        return None
    made = result(tuner, space, budget, oracle=oracle, seed=seed, max_trials=max_trials,
                  end_message=the_oracle.end_message)
    output = output or os.path.join(tuner.project_dir, "result.json")
    write(made, output)
    print(summary(made))
    return made


def trial_entry(trial, space, budget):
    """One trial as the result records it: `trial_id`, `hyperparameters`, `status`
    (keras-tuner's words), `macs`, `params`, `latency_ms`, `val_top1`, `reason`."""
    values = {k: trial.hyperparameters.values.get(k) for k in space.choices}
    entry = {"trial_id": trial.trial_id, "hyperparameters": values, "status": trial.status}
    for name in METRICS:
        entry[name] = (trial.metrics.get_last_value(name) if trial.metrics.exists(name)
                       else None)
    if entry["macs"] is None and trial.status != COMPLETED:
        try:  # known before training for bl / width_resolution
            entry["macs"] = space.cost_of(values, budget).macs
        except Exception:  # noqa: BLE001 (a configuration that cannot even be built)
            pass
    for name in ("macs", "params"):
        if entry[name] is not None:
            entry[name] = int(entry[name])
    entry["reason"] = (trial.message or "").split("\n")[0] or None
    return entry


def result(tuner, space, budget, *, oracle, seed, max_trials, end_message=None,
           test=True):
    """The result of a finished search: `trials` (every trial, by id), `best` (the best
    validation top-1 of the completed trials within the budget; ties: fewer MACs), `pareto`
    (the non-dominated completed trials, accuracy against MACs, cheapest first) and
    `pareto_latency` (the same against latency where measured). `best` and the `pareto`
    entries also carry `test_top1` (the test split is looked at only for them)."""
    from bl_keras import query_table

    trials = [trial_entry(t, space, budget)
              for _, t in sorted(tuner.oracle.trials.items())]
    done = [t for t in trials if t["status"] == COMPLETED and t["val_top1"] is not None
            and budget.fits(t["macs"], t["latency_ms"])]
    best = (min(done, key=lambda t: (-t["val_top1"], t["macs"] or 0)) if done else None)
    pareto = query_table.non_dominated(done, "macs", "val_top1")
    pareto_latency = query_table.non_dominated(done, "latency_ms", "val_top1")
    if test:
        chosen = {t["trial_id"] for t in [*([best] if best else []), *pareto, *pareto_latency]}
        tests = {tid: _test_top1(tuner, space, trials, tid) for tid in sorted(chosen)}
        for entry in [*trials, *pareto, *pareto_latency, *([best] if best else [])]:
            if entry["trial_id"] in tests:
                entry["test_top1"] = tests[entry["trial_id"]]
    made = {
        **space.describe(),
        "oracle": oracle,
        "seed": seed,
        "max_trials": max_trials,
        "budget": budget.to_json(),
        "recipe": _recipe(space.recipe),
        "directory": tuner.project_dir,
        "trials": trials,
        "best": best,
        "pareto": pareto,
        "pareto_latency": pareto_latency,
        "message": end_message,
    }
    if best is not None and hasattr(space, "train_flags"):
        made["train_command"] = train_command(space.train_flags(best["hyperparameters"]),
                                              space.recipe)
    return made


def _test_top1(tuner, space, trials, trial_id):
    entry = next(t for t in trials if t["trial_id"] == trial_id)
    trial_dir = os.path.join(tuner.project_dir, f"trial_{trial_id}")
    try:
        return space.test_top1(entry["hyperparameters"], trial_dir)
    except (OSError, ValueError) as e:  # e.g. a trial run on another host
        print(f"test top-1 of trial {trial_id} not measured: {e}")
        return None


def _recipe(recipe):
    values = dataclasses.asdict(recipe)
    values.pop("model_dir")
    return values


def train_command(flags, recipe):
    """The `python -m apps.train` command line that trains a configuration in full."""
    words = ["python -m apps.train"]
    for name, value in {**flags, "dataset": recipe.dataset, "data_dir": recipe.data_dir,
                        "image_size": recipe.image_size, "batch_size": recipe.batch_size,
                        "lr": recipe.lr, "epochs": recipe.epochs,
                        "model_dir": "runs/best"}.items():
        if value is not None:
            words.append(f"--{name}={value}")
    return " ".join(words)


def write(made, output):
    """Writes the result JSON at `output`, its trials as CSV and its plot as PNG beside it.
    Returns the three paths."""
    from bl_keras import plots

    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    stem = os.path.splitext(output)[0]
    with open(output, "w") as f:
        json.dump(made, f, indent=2)
    with open(f"{stem}.csv", "w", newline="") as f:
        names = sorted({k for t in made["trials"] for k in t["hyperparameters"]})
        writer = csv.writer(f)
        writer.writerow([*names, *CSV_KEYS])
        for t in made["trials"]:
            writer.writerow([*(t["hyperparameters"].get(k) for k in names),
                             *(t.get(k) for k in CSV_KEYS)])
    plots.search_trials(made["trials"], made["pareto"], f"{stem}.png",
                        query_table=query_table_rows(made),
                        budget=made["budget"]["max_macs"],
                        title=f"{made['space']} search ({made['oracle']}): validation top-1 "
                              "against MACs")
    return output, f"{stem}.csv", f"{stem}.png"


def query_table_rows(made):
    """For a width_resolution search: its query table (`made["query_table"]` where the caller
    put the exhaustive one, else the completed trials as query-table rows); None otherwise."""
    if made["space"] != "width_resolution":
        return None
    if made.get("query_table"):
        return made["query_table"]
    return [{**t["hyperparameters"], "macs": t["macs"], "params": t["params"],
             "top1": t["val_top1"], "latency_ms": t["latency_ms"]}
            for t in made["trials"] if t["status"] == COMPLETED] or None


def summary(made):
    """Every trial as a table, then the best and the Pareto front, in words."""
    from bl_keras import benchmark

    names = list(made["choices"])
    rows = [[t["trial_id"], *(t["hyperparameters"][k] for k in names),
             _format("macs", t["macs"]), _format("params", t["params"]),
             _format("latency_ms", t["latency_ms"]), _format("val_top1", t["val_top1"]),
             t["status"] + (f" ({t['reason']})" if t["reason"] else "")]
            for t in made["trials"]]
    lines = [f"\n## {made['space']} search, {made['oracle']} oracle, budget "
             f"{Budget(**made['budget']).describe()}\n",
             benchmark.format_table(["trial", *names, "MACs", "params", "latency",
                                     "val top-1", "status"], rows)]
    if made.get("message"):
        lines.append(f"\n{made['message']}")
    if made.get("left_out"):
        first = made["left_out"][0]
        lines.append(f"\nleft out {len(made['left_out'])} combinations the builder rejects, "
                     f"e.g. {first['hyperparameters']}: {first['reason']}")
    best = made["best"]
    if best is None:
        lines.append("\nno trial completed within the budget")
    else:
        lines.append(f"\nbest under the budget: trial {best['trial_id']} "
                     f"{best['hyperparameters']}: val top-1 {_format('val_top1', best['val_top1'])}"
                     f", test top-1 {_format('test_top1', best.get('test_top1'))}, "
                     f"{_format('macs', best['macs'])} MACs")
    lines.append("Pareto front (val top-1 against MACs): " + ", ".join(
        f"{t['hyperparameters']} {_format('val_top1', t['val_top1'])} @ "
        f"{_format('macs', t['macs'])}" for t in made["pareto"]))
    if made.get("train_command"):
        lines.append(f"train it in full: {made['train_command']}")
    return "\n".join(lines)


def load_result(path):
    with open(path) as f:
        return json.load(f)


def build_best(made, trained=True):
    """The best configuration of a search result (a dict or a JSON path) as a Keras model.

    - `bl`: the model the builder makes with the best hyperparameters, untrained
      (`trained=True` loads the trial's trained weights instead, where its folder is here);
      `result["train_command"]` trains it in full.
    - `multires`: the trial's pruned, fine-tuned model (`trained=False`: the pruned model
      before fine-tuning; train it further with `apps.train --init_model=...`).
    - `width_resolution`: the calibrated sub-network of the best width and resolution.
    """
    if isinstance(made, (str, os.PathLike)):
        made = load_result(made)
    best = made.get("best")
    if best is None:
        raise ValueError("the search result has no best configuration (no trial completed "
                         "within the budget)")
    from bl_keras.training import trainer

    recipe = trainer.TrainConfig(model_dir="", **made["recipe"])
    trial_dir = os.path.join(made["directory"], f"trial_{best['trial_id']}")
    values = best["hyperparameters"]
    if made["space"] == "width_resolution":
        return spaces.WidthResolutionSpace(made["model_path"], recipe).build_values(values)
    if made["space"] == "multires":
        from tuner.multires_space import MultiresSpace

        return MultiresSpace.load_trial_model(trial_dir, fine_tuned=trained)
    if trained and os.path.exists(os.path.join(trial_dir, "train", "model.keras")):
        import keras

        import bl_keras  # noqa: F401

        return keras.models.load_model(os.path.join(trial_dir, "train", "model.keras"))
    space = spaces.BigLittleSpace(recipe, classes=made["classes"],
                                  **{k: [v] for k, v in values.items()})
    return space.build_values(values)
