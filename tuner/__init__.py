"""keras-tuner searches over bl_keras builders under a compute budget.

>>> from bl_keras.training import trainer
>>> import tuner
>>> recipe = trainer.TrainConfig(model="bl_resnet20_cifar", model_dir="", dataset="digits",
...                              epochs=2, batch_size=64, eval_split="val")
>>> space = tuner.make_space("bl", recipe)                           # doctest: +SKIP
>>> result = tuner.search(space, budget=tuner.Budget(max_macs=20e6), oracle="bayesian",
...                       max_trials=6, seed=0, directory="runs/search")  # doctest: +SKIP
>>> model = tuner.build_best(result)                                 # doctest: +SKIP

Spaces (`tuner.spaces`, `tuner.multires_space`): `bl` (alpha, beta, merge of a Big-Little
model), `multires` (levels, pooling, upsampling, block of a multi-resolution model: search,
prune to the budget, fine-tune), `width_resolution` (width and resolution of a trained
slimmable model: calibration and evaluation only). Oracles (`tuner.oracles`): random, grid,
Bayesian, all proposing only configurations that fit the budget and were not tried.
"""

from tuner.budget import Budget
from tuner.oracles import ORACLES, NoFeasibleConfiguration, make_oracle
from tuner.search import SPACES, build_best, load_result, make_space, search
from tuner.search import write as write_result

__all__ = ["ORACLES", "SPACES", "Budget", "NoFeasibleConfiguration", "build_best",
           "load_result", "make_oracle", "make_space", "search", "write_result"]
