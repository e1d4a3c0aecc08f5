"""Search spaces: keras-tuner HyperModels that map hyperparameters to our builders' arguments
(never a second copy of a network) and run one trial each.

- `BigLittleSpace` (`bl`): `alpha`, `beta`, `merge` of a Big-Little model; a trial trains it
  with the recipe (`bl_keras.training.trainer`) and reports its validation top-1.
- `MultiresSpace` (`multires`, `tuner.multires_space`): levels, pooling, upsampling and block
  of a multi-resolution model; a trial = alternating search, prune to the budget, fine-tune.
- `WidthResolutionSpace` (`width_resolution`): width and input resolution of a trained
  slimmable model; a trial = BatchNorm calibration + evaluation, never training.

Every space is discrete. `candidates()` lists its configurations: the product of the choices
less the combinations the builder rejects (such as `alpha=1` with `merge="concat"`), which are
kept in `left_out` with the reason; a value that builds in no combination is an error.
`key(values)` names the network a configuration builds, so that configurations building the
same network (ResNet-20's 3-block stages with every beta >= 2) share a key and are tried once;
`cost(values)` gives the MACs (and, where the budget limits it, the latency) before any
training where that is known.
"""

import dataclasses
import hashlib
import itertools
import json
import os

import keras
import keras_tuner as kt

from bl_keras import evaluation, profile
from bl_keras.training import trainer


@dataclasses.dataclass(frozen=True)
class Cost:
    macs: int | None  # per image; None: known only after the trial (multires)
    latency_ms: float | None = None  # measured where the budget limits latency
    params: int | None = None


class Space(kt.HyperModel):
    """A discrete search space over one of our builders.

    Subclasses set `name` and `choices` (hyperparameter name -> ordered values, the names of
    the builder's arguments) and implement `network_key`, `cost` and `run_trial`."""

    name = None
    clears_session = True  # trials build models: clear Keras' session before each

    def __init__(self, recipe, choices, latency_cache=None):
        super().__init__(name=self.name)
        self.recipe = recipe
        self.choices = {k: tuple(v) for k, v in choices.items() if len(v)}
        if not self.choices:
            raise ValueError(f"the {self.name} space has no hyperparameter to search")
        for k, values in self.choices.items():
            if len(set(values)) != len(values):
                raise ValueError(f"{k} repeats a value: {list(values)}")
        self.latency_cache = latency_cache
        self._keys = {}
        self._costs = {}
        self._candidates = None
        self.left_out = []  # [(values, reason)]: combinations the builder rejects

    # keras-tuner's HyperModel.

    def declare_hyperparameters(self, hp):
        for k, values in self.choices.items():
            hp.Choice(k, list(values), ordered=not isinstance(values[0], str))

    def build(self, hp):
        """The model of the trial's hyperparameters (keras-tuner's HyperModel API)."""
        self.declare_hyperparameters(hp)
        return self.build_values({k: hp.get(k) for k in self.choices})

    # The discrete space.

    def candidates(self):
        """Every configuration (a dict hyperparameter -> value) the builder accepts, in grid
        order. Raises the builder's ValueError when some value of a hyperparameter builds in
        no combination (the space does not fit the model)."""
        if self._candidates is None:
            names = list(self.choices)
            kept = []
            for combo in itertools.product(*self.choices.values()):
                values = dict(zip(names, combo))
                try:
                    self.key(values)
                except ValueError as e:
                    self.left_out.append((values, e))
                else:
                    kept.append(values)
            for name, options in self.choices.items():
                for option in options:
                    if not any(v[name] == option for v in kept):
                        raise next(e for v, e in self.left_out if v[name] == option)
            self._candidates = kept
        return self._candidates

    @staticmethod
    def values_id(values):
        return json.dumps(values, sort_keys=True)

    def key(self, values):
        """A name of the network `values` builds: equal for configurations that build the same
        network."""
        vid = self.values_id(values)
        if vid not in self._keys:
            self._keys[vid] = self.network_key(values)
        return self._keys[vid]

    def cost_of(self, values, budget):
        """`cost(values, budget)`, cached per network (and whether latency was asked for)."""
        key = (self.key(values), budget.needs_latency)
        if key not in self._costs:
            self._costs[key] = self.cost(values, budget)
        return self._costs[key]

    def measured_latency(self, key, make_model, image_size):
        """Batch-1 float32 TFLite latency of `make_model()`, cached by `key`."""
        def measure():
            return evaluation.latency_ms(make_model(), image_size, "tflite")

        if self.latency_cache is None:
            return measure()
        return self.latency_cache.get(key, measure)

    # What every space implements (the three spaces below and the tests' toy space do; the
    # base class is never used on its own).

    def _missing(self, method):
        raise NotImplementedError(f"{type(self).__name__} must implement Space.{method}")

    def network_key(self, values):
        """A name of the network `values` builds (equal for equal networks)."""
        self._missing("network_key")

    def cost(self, values, budget):
        """The `Cost` of `values`, before any training where that is known."""
        self._missing("cost")

    def run_trial(self, values, trial_dir, budget):
        """Runs one trial; returns metrics (`val_top1`, `macs`, `params`, `latency_ms`)."""
        self._missing("run_trial")

    def build_values(self, values):
        """The Keras model of `values`."""
        self._missing("build_values")

    def test_top1(self, values, trial_dir):
        """Top-1 on the test split of the configuration a completed trial chose."""
        self._missing("test_top1")

    def describe(self):
        """What the result JSON records about the space."""
        return {"space": self.name, "choices": {k: list(v) for k, v in self.choices.items()},
                "left_out": [{"hyperparameters": v, "reason": str(e).splitlines()[0]}
                             for v, e in self.left_out]}


def structure(model, input_shape):
    """(key, MACs, params) of a model: the key hashes what the network computes (every
    weight's path and shape, every counted layer call's input and output shape), not the
    arguments that built it, so two configurations that build the same network share it."""
    records = profile.mac_table(model, input_shape)
    parts = [(w.path, tuple(w.shape)) for w in model.weights]
    parts += [(r.path, r.layer_type, tuple(r.input_shape), tuple(r.output_shape))
              for r in records]
    key = hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
    return key, int(sum(r.macs for r in records if r.macs)), profile.count_params(model)


def trial_config(recipe, model_dir, **changes):
    return dataclasses.replace(recipe, model_dir=model_dir, **changes)


def clear_session(mixed_precision):
    """`keras.backend.clear_session()`, then the global dtype policy again (clearing resets
    it)."""
    keras.backend.clear_session()
    trainer.set_precision(mixed_precision)


def eval_top1(model, recipe, split):
    config = trial_config(recipe, recipe.model_dir, eval_split=split)
    return float(evaluation.accuracy_and_loss(model, trainer.eval_dataset(config))["top1"])


class BigLittleSpace(Space):
    """`alpha`, `beta` and `merge` of a Big-Little model (`recipe.model`, e.g.
    `bl_resnet20_cifar` or `bl_resnet50`); the hyperparameter names are the builder's
    arguments. A trial trains the model with the recipe (`recipe.epochs`, ...) on the training
    split and reports the top-1 on `recipe.eval_split` (the validation split).

    Args:
        recipe: a `trainer.TrainConfig` (its `model_kwargs` fixed for every trial).
        alpha, beta: the values to try (positive integers).
        merge: the merges to try (() to leave the builder's default; default both where the
            model takes `merge`).
        classes: the classes of the data set (for the MAC count of the classifier).
    """

    name = "bl"

    def __init__(self, recipe, alpha=(1, 2, 4), beta=(1, 2, 3, 4), merge=None, classes=10,
                 latency_cache=None):
        self.classes = classes
        self._recipe_check(recipe)
        if merge is None:
            merge = ("add", "concat") if self._takes_merge(recipe) else ()
        super().__init__(recipe, {"alpha": alpha, "beta": beta, "merge": merge},
                         latency_cache)
        self._counts = {}  # key -> (macs, params)

    @staticmethod
    def _recipe_check(recipe):
        from bl_keras import models

        if recipe.model not in models.list_models():
            raise ValueError(f"unknown model {recipe.model!r}; known: {models.list_models()}")
        big_little = [m for m in models.list_models() if "bl_" in m]
        if recipe.model not in big_little:
            raise ValueError(f"the bl space searches a Big-Little model ({', '.join(big_little)})"
                             f", not {recipe.model!r}")

    def _build_kwargs(self, values):
        return {**self.recipe.model_kwargs, **values}

    def _takes_merge(self, recipe):
        try:
            self._make(recipe, {"merge": "add"})
        except TypeError:
            return False
        return True

    def _make(self, recipe, values):
        from bl_keras import models

        shape = trainer.input_shape(recipe)
        extra = {"pooling": "avg"} if trainer.is_speech_model(recipe.model) else {}
        return models.get(recipe.model, classes=self.classes, input_shape=shape, **extra,
                          **{**recipe.model_kwargs, **values})

    def build_values(self, values):
        try:
            return self._make(self.recipe, values)
        except (TypeError, ValueError) as e:
            given = ", ".join(f"{k}={v!r}" for k, v in values.items())
            raise ValueError(f"the bl space does not fit model {self.recipe.model!r} "
                             f"({given}): {e}") from e

    def network_key(self, values):
        key, macs, params = structure(self.build_values(values),
                                      trainer.input_shape(self.recipe))
        self._counts[key] = (macs, params)  # the model is not kept: a space may be large
        return key

    def cost(self, values, budget):
        key = self.key(values)
        macs, params = self._counts[key]
        latency = None
        if budget.needs_latency:
            shape = trainer.input_shape(self.recipe)
            latency = self.measured_latency(key, lambda: self.build_values(values), shape[:2])
        return Cost(macs, latency, params)

    def run_trial(self, values, trial_dir, budget):
        config = trial_config(self.recipe, os.path.join(trial_dir, "train"),
                              model_kwargs=self._build_kwargs(values))
        metrics = trainer.train(config)
        cost = self.cost_of(values, budget)
        return {"val_top1": metrics["top1"], "macs": metrics["macs"],
                "params": metrics["params"],
                **({"latency_ms": cost.latency_ms} if cost.latency_ms is not None else {})}

    def test_top1(self, values, trial_dir):
        model = keras.models.load_model(os.path.join(trial_dir, "train", "model.keras"))
        return eval_top1(model, self.recipe, "test")

    def train_flags(self, values):
        """The `apps.train` flags that train this configuration in full."""
        return {"model": self.recipe.model, **self._build_kwargs(values)}

    def describe(self):
        return {**super().describe(), "model": self.recipe.model, "classes": self.classes}


class WidthResolutionSpace(Space):
    """Width and input resolution of a trained slimmable model (MutualNet, US-Nets): a trial
    computes the configuration's BatchNorm post-statistics on training images and measures
    top-1 on `recipe.eval_split`; nothing is trained.

    Args:
        model_path: a saved slimmable model (`.keras`).
        recipe: a `trainer.TrainConfig` (data set, batch size, `num_calibration_images`).
        widths: the widths to try (default the model's range in 0.05 steps).
        resolutions: square input sizes (default `recipe.image_size`).
    """

    name = "width_resolution"

    def __init__(self, model_path, recipe, widths=None, resolutions=None, latency_cache=None):
        from bl_keras import query_table

        self.model_path = model_path
        self.model = load_slimmable(model_path)
        widths = query_table.check_widths(self.model, widths)
        resolutions = query_table.check_resolutions(self.model,
                                                    resolutions or (recipe.image_size,))
        super().__init__(recipe, {"width": widths, "resolution": resolutions}, latency_cache)

    def build_values(self, values):
        from bl_keras import query_table

        return query_table.calibrated_subnetwork(
            self.model, values["width"], values["resolution"],
            self._batches(values["resolution"], "train"), self.recipe.num_calibration_images)

    def network_key(self, values):
        return f"width{values['width']:g}_res{values['resolution']}"

    def cost(self, values, budget):
        from bl_keras import slimmable

        r = values["resolution"]
        shape = (r, r, self.model.input_shape[-1])
        previous = slimmable.get_width(self.model)
        try:
            slimmable.set_width(self.model, values["width"])
            macs = profile.count_macs(self.model, shape)
        finally:
            slimmable.set_width(self.model, previous)
        latency = None
        if budget.needs_latency:
            def make():
                from bl_keras import query_table

                sub = slimmable.subnetwork(self.model, values["width"],
                                           require_statistics=False)
                return query_table._fixed_size(sub, r)

            latency = self.measured_latency(self.key(values), make, (r, r))
        return Cost(macs, latency)

    def _batches(self, resolution, split):
        import pipelines

        return pipelines.get_dataset(
            self.recipe.dataset, split, resolution, self.recipe.batch_size,
            training=split == "train", data_dir=self.recipe.data_dir,
            seed=self.recipe.seed if self.recipe.seed is not None else 0)

    def _top1(self, values, split):
        from bl_keras import query_table

        sub = self.build_values(values)
        r = values["resolution"]
        return sub, query_table.top1(sub, self._batches(r, split), r)

    def run_trial(self, values, trial_dir, budget):
        sub, top1 = self._top1(values, self.recipe.eval_split)
        cost = self.cost_of(values, budget)
        r = values["resolution"]
        return {"val_top1": top1,
                "macs": profile.count_macs(sub, (r, r, self.model.input_shape[-1])),
                "params": profile.count_params(sub),
                **({"latency_ms": cost.latency_ms} if cost.latency_ms is not None else {})}

    def test_top1(self, values, trial_dir):
        return self._top1(values, "test")[1]

    def describe(self):
        return {**super().describe(), "model_path": self.model_path, "model": self.model.name}


def load_slimmable(path):
    """The slimmable model saved at `path`, or a ValueError saying what it is instead."""
    import bl_keras  # noqa: F401  (registers our layers)
    from bl_keras import slimmable

    if not path or not os.path.exists(path):
        raise ValueError(f"model_path {path!r} does not exist: give a trained slimmable "
                         "model (.keras), e.g. apps.train --mutual_learning's model.keras")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 (any unreadable file gets the same message)
        raise ValueError(f"model_path {path!r} is not a Keras model file: {e}") from e
    if not slimmable.slimmable_layers(model):
        raise ValueError(f"model_path {path!r} holds {model.name!r}, which has no slimmable "
                         "layers: the width_resolution space needs a slimmable model (us_*, "
                         "trained with apps.train --mutual_learning)")
    return model
