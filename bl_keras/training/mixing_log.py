"""The mixing weights of a multi-resolution search, written after every epoch: TensorBoard
scalars (`logs/mixing`), `model_dir/mixing.json` (one entry per epoch: alpha as layers x
levels, beta, the learned depth) and the heat map `model_dir/mixing.png` (Fig. 3 of seed 002)."""

import json
import os

from bl_keras._tensorflow import require_tensorflow

tf = require_tensorflow("bl_keras.training.mixing_log (TensorBoard logs of the mixing weights)")


MIXING_FILE = "mixing.json"
HEATMAP_FILE = "mixing.png"


class MixingLog:
    """Writes the mixing weights of `network` for an epoch (`write(epoch)`, 1-based); a resumed
    run drops entries of epochs it trains again, so no epoch repeats."""

    def __init__(self, network, model_dir):
        self.network = network
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, MIXING_FILE)
        self.writer = None

    def _entries(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return json.load(f)

    def write(self, epoch):
        from bl_keras import multires

        alpha = multires.mixing_weights(self.network)
        beta = multires.depth_weights(self.network)
        entry = {"epoch": int(epoch), "alpha": alpha.round(6).tolist(),
                 "layers": [layer.name for layer in multires.multires_layers(self.network)]}
        if beta is not None:
            entry["beta"] = beta.round(6).tolist()
            entry["learned_depth"] = multires.learned_depth(self.network)
        entries = [e for e in self._entries() if e["epoch"] < epoch] + [entry]
        os.makedirs(self.model_dir, exist_ok=True)
        with open(self.path, "w") as f:
            json.dump(entries, f, indent=1)
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(os.path.join(self.model_dir, "logs",
                                                                     "mixing"))
        with self.writer.as_default(step=int(epoch)):
            for name, row in zip(entry["layers"], alpha):
                for level, value in enumerate(row):
                    tf.summary.scalar(f"alpha/{name}/level{level}", float(value))
            for index, value in enumerate(beta if beta is not None else ()):
                tf.summary.scalar(f"beta/layer{index + 2}", float(value))
        self.writer.flush()
        multires.plot_mixing(self.network, os.path.join(self.model_dir, HEATMAP_FILE),
                             title=f"softmax(alpha) after epoch {epoch}")
        return entry
