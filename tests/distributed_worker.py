"""One worker of the two-worker `MultiWorkerMirroredStrategy` test (tests/test_distributed.py).

Run with TF_CONFIG set for this worker:

    python tests/distributed_worker.py MODEL_DIR OUT.npz [--epochs 2] [--steps 4]

Trains bl_resnet20_cifar at 16x16 on the digits with `train_custom_loop` and writes its final
weights (every model variable, BatchNorm moving statistics included) and history to OUT.npz.
Each worker builds its model from its own random initialization: identical final weights show
that the strategy broadcast the chief's initial values and all-reduced every update.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGE_SIZE = 16


def main(argv=None):
    """Trains one worker and writes OUT.npz.

    Args:
        argv: command-line arguments (None: sys.argv[1:]).
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("out")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args(argv)

    # The strategy first: collective ops must be configured before other TensorFlow ops run.
    from bl_keras.training import distributed

    strategy = distributed.make_strategy("multi_worker")

    import keras
    import numpy as np

    import pipelines
    from bl_keras import models
    from bl_keras.training import optim

    task = json.loads(os.environ["TF_CONFIG"])["task"]
    keras.utils.set_random_seed(1000 + task["index"])  # a different start on each worker
    built = []

    def build_model():
        model = models.get("bl_resnet20_cifar", classes=10,
                           input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3))
        built.append(model)
        return model

    def dataset_fn(context, epoch):
        return pipelines.get_dataset("digits", "train", IMAGE_SIZE,
                                     batch_size=args.global_batch, training=True, seed=epoch,
                                     deterministic=True, input_context=context)

    def eval_dataset_fn(context):
        return pipelines.get_dataset("digits", "val", IMAGE_SIZE, batch_size=args.global_batch,
                                     training=False, input_context=context)

    total = args.epochs * args.steps
    history = distributed.train_custom_loop(
        strategy, build_model, dataset_fn, epochs=args.epochs,
        global_batch_size=args.global_batch, steps_per_epoch=args.steps,
        make_optimizer=lambda: optim.make_optimizer(
            "sgd", optim.schedule(args.lr, total, warmup_steps=args.steps)),
        loss=optim.make_loss(), model_dir=args.model_dir, eval_dataset_fn=eval_dataset_fn,
        verbose=2)
    model = built[0]
    np.savez(
        args.out,
        *[keras.ops.convert_to_numpy(w) for w in model.weights],
        loss=np.array([row["loss"] for row in history]),
        val_loss=np.array([row["val_loss"] for row in history]),
        accuracy=np.array([row["accuracy"] for row in history]),
        chief=np.array(distributed.is_chief(strategy)),
        replicas=np.array(strategy.num_replicas_in_sync),
    )


if __name__ == "__main__":
    main()
