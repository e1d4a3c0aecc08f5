"""The `multires` search space (seed 002): levels, pooling, upsampling and block of a
multi-resolution model; a trial is the paper's whole recipe at small scale.

1. The alternating search (`trainer.train(search="alternating")`): network weights on D_a,
   mixing weights on D_b, both parts of the training split.
2. Pruning to the budget (`bl_keras.multires.prune`): the smallest threshold whose pruned model
   fits (MACs and, where limited, latency; a larger threshold keeps fewer levels), or one level
   per layer (`keep_best`) as the last resort. Over budget even then, the trial is recorded
   as failed, with the MACs it reached in its reason. Without a budget, the paper's 0.1.
3. A short fine-tune of the pruned model (`init_model`), whose validation top-1 (the
   validation split, never D_b, which the mixing weights were fitted on) and MACs the trial
   reports.
"""

import bisect
import os

import keras

from bl_keras import multires, profile
from bl_keras.training import trainer
from tuner import spaces

PAPER_THRESHOLD = 0.1


class OverBudget(RuntimeError):
    """Even one level per layer does not fit the budget."""


class MultiresSpace(spaces.Space):
    """Levels, pooling, upsampling and block of a multi-resolution model (`recipe.model`, one
    of `bl_keras.models.multires.MODELS`, its other arguments in `recipe.model_kwargs`).

    Args:
        recipe: a `trainer.TrainConfig`; `epochs` is the search's length.
        levels, pool, upsample, block: the values to try (the builder's arguments).
        fine_tune_epochs: epochs of the pruned model's fine-tune (default `recipe.epochs`).
        classes: the data set's classes.
    """

    name = "multires"
    HYPERPARAMETERS = ("levels", "pool", "upsample", "block")

    def __init__(self, recipe, levels=(2, 3, 4), pool=("max", "avg"),
                 upsample=("nearest", "bilinear"), block=("conv",), fine_tune_epochs=None,
                 classes=10, latency_cache=None):
        from bl_keras.models import multires as multires_models

        names = [b.__name__ for b in multires_models.MODELS]
        if recipe.model not in names:
            raise ValueError(f"the multires space searches a multi-resolution model "
                             f"({', '.join(names)}), not {recipe.model!r}")
        self.classes = classes
        self.fine_tune_epochs = fine_tune_epochs or recipe.epochs
        super().__init__(recipe, {"levels": levels, "pool": pool, "upsample": upsample,
                                  "block": block}, latency_cache)
        for values in self.candidates():  # every configuration builds, before any training
            self.build_values(values)
        keras.backend.clear_session()

    def _kwargs(self, values):
        return {**self.recipe.model_kwargs, **values}

    def build_values(self, values):
        from bl_keras import models

        try:
            return models.get(self.recipe.model, classes=self.classes,
                              input_shape=trainer.input_shape(self.recipe),
                              **self._kwargs(values))
        except (TypeError, ValueError) as e:
            given = ", ".join(f"{k}={v!r}" for k, v in values.items())
            raise ValueError(f"the multires space does not fit model {self.recipe.model!r} "
                             f"({given}): {e}") from e

    def network_key(self, values):
        return self.values_id(values)

    def cost(self, values, budget):
        return spaces.Cost(None)  # known after the search and the prune

    def _fits(self, model, budget, key):
        shape = trainer.input_shape(self.recipe)
        macs = profile.count_macs(model, shape)
        latency = None
        if budget.needs_latency:
            latency = self.measured_latency(key, lambda: model, shape[:2])
        return budget.fits(macs, latency), macs, latency

    def prune_to_budget(self, model, budget, key="pruned"):
        """(pruned model, threshold or "keep_best", fits, macs): the smallest threshold whose
        pruned model fits (the MACs fall as the threshold rises), else one level per layer."""
        if budget.max_macs is None and not budget.needs_latency:
            pruned = multires.prune(model, threshold=PAPER_THRESHOLD)
            return pruned, PAPER_THRESHOLD, True, profile.count_macs(
                pruned, trainer.input_shape(self.recipe))
        weights = multires.mixing_weights(model)
        thresholds = sorted({float(w) for w in weights.flat if w > 0})
        fits = [None] * len(thresholds)

        def fits_at(i):
            if fits[i] is None:
                pruned = multires.prune(model, threshold=thresholds[i])
                fits[i] = (*self._fits(pruned, budget, f"{key}_t{thresholds[i]:.6f}"), pruned)
            return fits[i][0]

        class Probe:  # bisect over "fits at threshold i" (False ... False True ... True)
            def __getitem__(self, i):
                return fits_at(i)

            def __len__(self):
                return len(thresholds)

        first = bisect.bisect_left(Probe(), True)
        if first < len(thresholds):
            return fits[first][3], thresholds[first], True, fits[first][1]
        pruned = multires.prune(model, keep_best=True)
        ok, macs, _ = self._fits(pruned, budget, f"{key}_keep_best")
        return pruned, "keep_best", ok, macs

    def run_trial(self, values, trial_dir, budget):
        search_dir = os.path.join(trial_dir, "search")
        trainer.train(spaces.trial_config(self.recipe, search_dir, search="alternating",
                                          model_kwargs=self._kwargs(values)))
        searched = keras.models.load_model(os.path.join(search_dir, "model.keras"),
                                           compile=False)
        multires.plot_mixing(searched, os.path.join(trial_dir, "mixing.png"),
                             title=f"softmax(alpha), {values}")
        pruned, threshold, ok, macs = self.prune_to_budget(searched, budget,
                                                           key=self.values_id(values))
        path = os.path.join(trial_dir, "pruned.keras")
        pruned.save(path)
        if not ok:
            raise OverBudget(f"over budget after keep_best: {budget.excess(macs)} "
                             f"(pruned model {macs:,} MACs)")
        metrics = trainer.train(spaces.trial_config(
            self.recipe, os.path.join(trial_dir, "finetune"), model=None, init_model=path,
            search="none", epochs=self.fine_tune_epochs))
        out = {"val_top1": metrics["top1"], "macs": metrics["macs"],
               "params": metrics["params"],
               "prune_threshold": -1.0 if threshold == "keep_best" else float(threshold)}
        if budget.needs_latency:
            out["latency_ms"] = self._fits(self.load_trial_model(trial_dir), budget,
                                           f"{self.values_id(values)}_finetuned")[2]
        return out

    @staticmethod
    def load_trial_model(trial_dir, fine_tuned=True):
        import bl_keras  # noqa: F401

        path = (os.path.join(trial_dir, "finetune", "model.keras") if fine_tuned
                else os.path.join(trial_dir, "pruned.keras"))
        return keras.models.load_model(path)

    def test_top1(self, values, trial_dir):
        return spaces.eval_top1(self.load_trial_model(trial_dir), self.recipe, "test")

    def describe(self):
        return {**super().describe(), "model": self.recipe.model,
                "fine_tune_epochs": self.fine_tune_epochs}
