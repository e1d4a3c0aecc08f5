"""Budget-aware keras-tuner oracles: random, grid and Bayesian.

keras-tuner's own oracles cannot respect a budget: a trial marked failed with
`FailedTrialError` still spends one of `max_trials`, the Bayesian oracle learns nothing from
it, three in a row end the search, and the Bayesian oracle proposes the same configuration
again on a discrete space. These subclasses propose only configurations that fit the budget
and build a network not tried yet (a space's `key`), so every trial is one worth training;
when none is left the search ends, saying so.

`seed` makes the proposals repeatable, and 0 is a seed like any other (keras-tuner takes a
falsy seed as "pick one at random").
"""

import warnings

import keras_tuner as kt
import numpy as np
from keras_tuner.oracles import BayesianOptimizationOracle, GridSearchOracle, RandomSearchOracle
from keras_tuner.src.engine import trial as trial_module
from sklearn.exceptions import ConvergenceWarning
from tqdm.auto import tqdm

RUNNING, STOPPED = trial_module.TrialStatus.RUNNING, trial_module.TrialStatus.STOPPED


class NoFeasibleConfiguration(ValueError):
    """No configuration of the space fits the budget."""


class BudgetAware:
    """What the three oracles share: the feasible, untried configurations of a `Space`.

    Subclasses implement `choose(pool, trial_id)`: one of `pool` (the feasible configurations
    not tried yet, in grid order)."""

    def __init__(self, space, budget, seed=None, max_trials=10, progress=True, **kwargs):
        super().__init__(objective=kt.Objective("val_top1", direction="max"),
                         max_trials=max_trials, seed=seed,
                         max_consecutive_failed_trials=max_trials + 1, **kwargs)
        if seed is not None:  # keras-tuner replaces a falsy seed by a random one
            self.seed = self._seed_state = int(seed)
            if hasattr(self, "_random_state"):
                self._random_state = np.random.RandomState(self.seed)
                self.gpr = self._make_gpr()
        self.space, self.budget, self.progress = space, budget, progress
        self._feasible = None
        self.end_message = None

    # The configurations.

    def feasible(self):
        """One configuration per distinct network that fits the budget, in grid order
        (computed once; MACs and latencies need no training)."""
        if self._feasible is None:
            seen, feasible = set(), []
            candidates = self.space.candidates()
            for values in tqdm(candidates, desc=f"{self.space.name} space: costs", unit="config",
                               disable=not self.progress or len(candidates) < 2, leave=False):
                key = self.space.key(values)
                if key in seen:
                    continue
                seen.add(key)
                cost = self.space.cost_of(values, self.budget)
                if cost.macs is None or self.budget.fits(cost.macs, cost.latency_ms):
                    feasible.append(values)
            self._feasible = feasible
        return self._feasible

    def check_feasible(self):
        """Raises `NoFeasibleConfiguration` (before any training) when nothing fits,
        naming the cheapest configuration."""
        if self.feasible():
            return
        candidates = self.space.candidates()
        costs = [(self.space.cost_of(v, self.budget), v) for v in candidates]
        cheapest = min(costs, key=lambda c: (c[0].macs, c[0].latency_ms or 0))
        cost, values = cheapest
        spent = f"{cost.macs / 1e6:.3f} M MACs" + (
            f", {cost.latency_ms:.3f} ms" if cost.latency_ms is not None else "")
        raise NoFeasibleConfiguration(
            f"no configuration of the {self.space.name} space fits the budget "
            f"({self.budget.describe()}): the cheapest, {values}, needs {spent}")

    def tried_keys(self):
        return {self.space.key(self._values(t)) for t in self.trials.values()}

    def _values(self, trial):
        return {k: trial.hyperparameters.values[k] for k in self.space.choices}

    def pool(self):
        tried = self.tried_keys()
        return [v for v in self.feasible() if self.space.key(v) not in tried]

    def populate_space(self, trial_id):
        pool = self.pool()
        if not pool:
            total = len(self.feasible())
            self.end_message = (f"the search ended: all {total} configurations of the "
                                f"{self.space.name} space within the budget "
                                f"({self.budget.describe()}) have been tried")
            return {"status": STOPPED, "values": None}
        return {"status": RUNNING, "values": dict(self.choose(pool, trial_id))}

    def _rng(self, trial_id):
        return np.random.default_rng([int(self.seed), int(trial_id)])

    def random_choice(self, pool, trial_id):
        return pool[int(self._rng(trial_id).integers(len(pool)))]

    def choose(self, pool, trial_id):
        """One of `pool`; each of the three oracles below implements it."""
        raise NotImplementedError(f"{type(self).__name__} must implement choose(pool, trial_id)")


class BudgetRandomOracle(BudgetAware, RandomSearchOracle):
    """Uniformly random among the feasible untried configurations."""

    def choose(self, pool, trial_id):
        return self.random_choice(pool, trial_id)


class BudgetGridOracle(BudgetAware, GridSearchOracle):
    """Every feasible configuration once, in grid order (exhaustive)."""

    def choose(self, pool, trial_id):
        return pool[0]


class BudgetBayesianOracle(BudgetAware, BayesianOptimizationOracle):
    """A Gaussian process on the hyperparameters embedded in [0, 1] (keras-tuner's embedding,
    its pessimistic hallucination of ongoing trials) with an upper confidence bound maximised
    exactly over the feasible untried configurations, instead of by L-BFGS over the unit box
    (whose optimum rounds to configurations already tried or over budget).

    Two departures from keras-tuner's GP, both measured on the width x resolution benchmark
    (`benchmarks/width_resolution_search.py`): top-1 on a finite validation split is noisy (a
    few images either way between neighbouring configurations), so the kernel has a learned
    noise term and a length scale per hyperparameter bounded below (keras-tuner's fits every
    score exactly and its one length scale collapses to 1e-5, which leaves the model nothing
    to generalise from); and the bound's weight on the uncertainty (keras-tuner's `beta`)
    falls linearly to 0 over the trials left, so the search explores first and spends its
    last trials on the configurations it predicts best. Random configurations until
    `num_initial_points` trials have completed (default 3 per hyperparameter)."""

    def choose(self, pool, trial_id):
        completed = [t for t in self.trials.values() if t.status == "COMPLETED"]
        initial = self.initial_points()
        if len(completed) < initial:
            return self.random_choice(pool, trial_id)
        x, y = self._vectorize_trials()
        self.gpr = self.noisy_gpr(x.shape[1])
        with warnings.catch_warnings():  # a length scale or the noise at its bound is expected
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.gpr.fit(np.nan_to_num(x, posinf=0, neginf=0),
                         np.nan_to_num(y, posinf=0, neginf=0))
        mu, sigma = self.gpr.predict(self._embed(pool), return_std=True)
        lower = mu - self.exploration(initial) * sigma  # negated top-1: the oracle minimises
        return pool[int(np.argmin(lower))]

    def noisy_gpr(self, dims):
        """Matern 2.5 with a length scale per hyperparameter in [0.05, 10] (of the unit
        embedding) times a learned amplitude, plus learned white noise; scores normalised."""
        from sklearn.gaussian_process import GaussianProcessRegressor, kernels

        kernel = kernels.ConstantKernel(1.0, (1e-2, 1e2)) * kernels.Matern(
            length_scale=np.full(dims, 0.5), length_scale_bounds=(0.05, 10.0), nu=2.5)
        return GaussianProcessRegressor(
            kernel=kernel + kernels.WhiteKernel(0.1, (1e-4, 1.0)), normalize_y=True,
            n_restarts_optimizer=5, random_state=self.seed)

    def initial_points(self):
        return self.num_initial_points or max(3 * len(self.space.choices), 3)

    def exploration(self, initial):
        """UCB's beta for the trial being proposed: keras-tuner's `beta` for the first
        model-guided trial, 0 for the last of `max_trials`."""
        after = self.max_trials - len(self.trials) - 1  # trials left after this one
        guided = max(1, self.max_trials - initial - 1)
        return self.beta * min(1.0, max(0.0, after / guided))

    def _embed(self, pool):
        space = self._nonfixed_space()
        return np.array([[hp.value_to_prob(values[hp.name]) for hp in space]
                         for values in pool])


ORACLES = {"random": BudgetRandomOracle, "grid": BudgetGridOracle,
           "bayesian": BudgetBayesianOracle}


def make_oracle(name, space, budget, max_trials, seed=None, progress=True):
    if name not in ORACLES:
        raise ValueError(f"oracle must be one of {tuple(ORACLES)}, got {name!r}")
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"max_trials must be a positive integer, got {max_trials!r}")
    return ORACLES[name](space, budget, seed=seed, max_trials=max_trials, progress=progress)
