"""The song-level classifier: an MLP on aggregated SampleCNN features (Lee & Nam 2017, Sec. 3.3)."""

from __future__ import annotations

import keras
from keras import layers


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
