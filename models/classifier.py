"""The song-level classifiers in Keras: the MLP on aggregated SampleCNN features (Lee & Nam 2017,
Sec. 3.3), and an RBF support-vector machine's decision function (so a fitted scikit-learn SVM can be
saved and applied like the others)."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops


def build_classifier(
    input_dim: int,
    num_labels: int,
    task: str = "tags",
    hidden_layers: int = 1,
    hidden_units: int = 512,
    dropout: float = 0.5,
    name: str = "song_classifier",
) -> keras.Model:
    """Builds an uncompiled song-level MLP.

    Each hidden layer is Dense -> BatchNormalization -> ReLU -> Dropout; the output is sigmoid
    (tags, multi-label) or softmax (classes, single-label).

    Args:
        input_dim: Length of the (standardized) feature vector.
        num_labels: Output units.
        task: "tags" or "classes".
        hidden_layers: Number of hidden layers (the paper: 1 or 2; 0 gives logistic regression).
        hidden_units: Units per hidden layer (the paper: 512).
        dropout: Dropout rate after each hidden layer (the paper: 0.5).
        name: Model name.

    Returns:
        A model mapping float32 (batch, input_dim) to probabilities (batch, num_labels). Layers:
        ``hidden{i}_dense hidden{i}_bn hidden{i}_relu hidden{i}_dropout`` (i from 1), ``output``.

    Raises:
        ValueError: For an unknown task or a non-positive size, or a dropout outside [0, 1).
    """
    if task not in ("tags", "classes"):
        raise ValueError(f"task must be 'tags' or 'classes', got {task!r}")
    for label, value, low in (("input_dim", input_dim, 1), ("num_labels", num_labels, 1),
                              ("hidden_layers", hidden_layers, 0), ("hidden_units", hidden_units, 1)):
        if int(value) != value or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")

    inputs = keras.Input(shape=(int(input_dim),), name="features")  # (batch, input_dim)
    x = inputs
    for i in range(1, int(hidden_layers) + 1):
        x = layers.Dense(int(hidden_units), name=f"hidden{i}_dense")(x)
        x = layers.BatchNormalization(name=f"hidden{i}_bn")(x)
        x = layers.Activation("relu", name=f"hidden{i}_relu")(x)
        x = layers.Dropout(dropout, name=f"hidden{i}_dropout")(x)  # (batch, hidden_units)
    activation = "sigmoid" if task == "tags" else "softmax"
    outputs = layers.Dense(int(num_labels), activation=activation, name="output")(x)  # (batch, num_labels)
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="msagg")
class RBFKernel(layers.Layer):
    """The RBF kernel to fixed support vectors: (batch, dim) -> exp(-gamma ||x - v||^2), (batch, num_vectors).

    Args:
        num_vectors: How many support vectors (their values are the layer's one weight, ``vectors``).
        gamma: The kernel's width parameter (scikit-learn's ``gamma``).
    """

    def __init__(self, num_vectors: int, gamma: float, **kwargs):
        super().__init__(**kwargs)
        self.num_vectors = int(num_vectors)
        self.gamma = float(gamma)

    def build(self, input_shape):
        self.vectors = self.add_weight(shape=(self.num_vectors, int(input_shape[-1])), initializer="zeros",
                                       trainable=False, name="vectors")

    def call(self, x):
        squared = (ops.sum(ops.square(x), axis=1, keepdims=True) - 2.0 * ops.matmul(x, ops.transpose(self.vectors))
                   + ops.expand_dims(ops.sum(ops.square(self.vectors), axis=1), 0))  # (batch, num_vectors)
        return ops.exp(-self.gamma * ops.maximum(squared, 0.0))

    def get_config(self):
        return {**super().get_config(), "num_vectors": self.num_vectors, "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="msagg")
class OneVsOneVotes(layers.Layer):
    """One-vs-one decisions -> one-vs-rest scores, as scikit-learn's ``SVC`` makes them: per class its
    votes plus its summed confidence s squashed to s / (3 (|s| + 1)), which only breaks ties.

    Input (batch, num_classes (num_classes - 1) / 2): the decision of each pair (i, j), i < j, in
    order, positive for i. Output (batch, num_classes).
    """

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        pairs = [(i, j) for i in range(self.num_classes) for j in range(i + 1, self.num_classes)]
        signs = np.zeros((len(pairs), self.num_classes), np.float32)  # +1 for i, -1 for j
        for k, (i, j) in enumerate(pairs):
            signs[k, i], signs[k, j] = 1.0, -1.0
        self._signs = signs
        self._losers = np.arange(self.num_classes, dtype=np.float32)  # votes of class c if every pair went to j: c

    def call(self, decision):
        signs = ops.convert_to_tensor(self._signs, dtype=decision.dtype)
        won = ops.cast(decision >= 0, decision.dtype)
        votes = ops.matmul(won, signs) + ops.convert_to_tensor(self._losers, dtype=decision.dtype)
        confidence = ops.matmul(decision, signs)
        return votes + confidence / (3.0 * (ops.abs(confidence) + 1.0))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def build_rbf_svm(input_dim: int, num_vectors: int, gamma: float, num_decisions: int, num_labels: int,
                  task: str = "tags", num_classes: int = 0, name: str = "song_svm") -> keras.Model:
    """Builds an RBF support-vector machine's scoring as an uncompiled Keras model (zero weights).

    Layers: ``kernel`` (``RBFKernel``: the support vectors), ``decision`` (Dense: dual coefficients
    and intercepts, one unit per binary decision), ``votes`` (``OneVsOneVotes``, only with
    ``num_classes``: one-vs-one decisions of that many classes -> one-vs-rest scores) and ``output``
    (Dense placing the scores among the labels; sigmoid for tags, softmax for classes).

    Args:
        input_dim: Length of the (standardized) feature vector.
        num_vectors: Support vectors.
        gamma: The kernel's gamma.
        num_decisions: Units of ``decision``.
        num_labels: Output units.
        task: "tags" or "classes".
        num_classes: Classes of a one-vs-one multi-class SVM (0: the decisions feed ``output`` directly).
        name: Model name.

    Returns:
        A model mapping float32 (batch, input_dim) to scores in [0, 1] (batch, num_labels).

    Raises:
        ValueError: For an unknown task.
    """
    if task not in ("tags", "classes"):
        raise ValueError(f"task must be 'tags' or 'classes', got {task!r}")
    inputs = keras.Input(shape=(int(input_dim),), name="features")  # (batch, input_dim)
    x = RBFKernel(num_vectors, gamma, name="kernel")(inputs)  # (batch, num_vectors)
    x = layers.Dense(int(num_decisions), name="decision")(x)  # (batch, num_decisions)
    if num_classes:
        x = OneVsOneVotes(num_classes, name="votes")(x)  # (batch, num_classes)
    outputs = layers.Dense(int(num_labels), activation="sigmoid" if task == "tags" else "softmax",
                           name="output")(x)  # (batch, num_labels)
    return keras.Model(inputs, outputs, name=name)
