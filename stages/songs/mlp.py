"""The paper's song-level MLP (Lee & Nam 2017, Sec. 3.3): its hyper-parameters and its training loop.

``msagg.stages.songs.classifiers`` registers it as the "mlp" classifier. Keras is imported where
the model is built or run, not with the module.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from msagg.data.errors import ConfigError
from msagg.stages.checks import check_int

if TYPE_CHECKING:
    import keras


@dataclasses.dataclass(frozen=True, kw_only=True)
class MLP:
    """The paper's song-level MLP hyper-parameters (the defaults of ``msagg.stages.classify.Config``).

    Attributes:
        hidden_layers: Hidden layers (the paper: 1 or 2).
        hidden_units: Units per hidden layer.
        dropout: Dropout after each hidden layer.
        learning_rate: Adam learning rate.
        batch_size: Mini-batch size (songs).
        epochs: Most epochs; early stopping on the validation loss usually ends sooner.
        patience: Epochs without a lower validation loss before stopping (best weights kept).
    """

    hidden_layers: int = 1
    hidden_units: int = 512
    dropout: float = 0.5
    learning_rate: float = 0.001
    batch_size: int = 32
    epochs: int = 200
    patience: int = 10

    def __post_init__(self):
        check_int("hidden_layers", self.hidden_layers, 0)
        for name in ("hidden_units", "batch_size", "epochs", "patience"):
            check_int(name, getattr(self, name), 1)
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if not isinstance(self.learning_rate, (int, float)) or not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate!r}")


def train_mlp(task: str, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray,
              config: MLP, seed: int) -> tuple[keras.Model, int]:
    """Trains the MLP: Adam, early stopping on the validation loss, best weights restored.

    Args:
        task: "tags" (sigmoid outputs, binary cross-entropy) or "classes" (softmax, categorical
            cross-entropy).
        x_train, x_valid: float32 (n, dim) standardized features.
        y_train, y_valid: uint8 (n, num_labels) multi-hot / one-hot.
        config: The hyper-parameters (an ``MLP`` or a ``msagg.stages.classify.Config``).
        seed: Seed of the initialization, dropout and shuffling.

    Returns:
        (the compiled model with its best weights, epochs run).
    """
    import keras

    from msagg.models.classifier import build_classifier

    keras.utils.set_random_seed(seed)
    model = build_classifier(x_train.shape[1], y_train.shape[1], task, config.hidden_layers, config.hidden_units,
                             config.dropout)
    loss = "binary_crossentropy" if task == "tags" else "categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate), loss=loss)
    epochs = _fit_early_stopping(model, x_train, y_train.astype(np.float32), x_valid, y_valid.astype(np.float32),
                                 config, seed)
    return model, epochs


def _batches(num: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(num)
    batches = [order[lo : lo + batch_size] for lo in range(0, num, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:  # batch norm needs more than one song
        batches[-2:] = [np.concatenate(batches[-2:])]
    return batches


def _fit_early_stopping(model: keras.Model, x_train, y_train, x_valid, y_valid, config: MLP, seed: int) -> int:
    """Mini-batch training with early stopping on the validation loss; the best weights are kept.

    Same rule as ``keras.callbacks.EarlyStopping(monitor="val_loss", restore_best_weights=True)``,
    but with ``train_on_batch``: on song-level sets of a few hundred vectors, ``fit``'s per-epoch
    data pipeline costs about ten times the training itself.

    Returns:
        Epochs run.
    """
    rng = np.random.default_rng(seed)
    best, best_weights, wait, epoch = math.inf, model.get_weights(), 0, 0
    for epoch in range(1, config.epochs + 1):
        for idx in _batches(len(x_train), config.batch_size, rng):
            model.train_on_batch(x_train[idx], y_train[idx])
        val = _mean_loss(model, x_valid, y_valid)
        if val < best:
            best, best_weights, wait = val, model.get_weights(), 0
        else:
            wait += 1
            if wait >= config.patience:
                break
    model.set_weights(best_weights)
    return epoch


def _mean_loss(model: keras.Model, x: np.ndarray, y: np.ndarray, chunk: int = 1024) -> float:
    total = 0.0
    for lo in range(0, len(x), chunk):
        out = model.test_on_batch(x[lo : lo + chunk], y[lo : lo + chunk])
        total += float(np.ravel(out)[0]) * len(x[lo : lo + chunk])
    value = total / max(1, len(x))
    return value if math.isfinite(value) else math.inf


def predict_proba(model: keras.Model, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Inference-mode outputs of a Keras model in chunks: float32 (n, num_labels)."""
    return np.concatenate([np.asarray(model(x[lo : lo + chunk], training=False), dtype=np.float32)
                           for lo in range(0, max(1, len(x)), chunk)])
