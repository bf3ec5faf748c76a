"""musicnn (Pons & Serra 2019), the log-mel music tagger msagg uses as a teacher, rebuilt in Keras 3.

The architecture, as the musicnn 0.1.0 paper and package describe it, on a log-mel patch
(time, 96 bands) (``msagg.data.melspec``):

- front end: batch normalisation of the input, then musically motivated convolutions, each
  Conv2D (ReLU) -> BN -> max over frequency: two *timbral* ones spanning 7 frames and 38 or 67
  bands (40 % and 70 % of 96; 204 filters, time padded by 3 on each side), three *temporal* ones
  spanning 128, 64 and 32 frames of one band (51 filters, "same" padding). Their 561 channels
  are concatenated per frame.
- mid end: three 1-D convolutions over time (7 frames, "same", ReLU) -> BN with ``filters``
  filters; the second and third add their input (residual); the front end's output and the three
  convolutions' outputs are concatenated (dense connection): 561 + 3 filters channels.
- back end: max and mean over time, interleaved per channel -> BN -> Dropout(0.5) -> Dense(units, ReLU)
  -> BN (the *penultimate* features) -> Dropout(0.5) -> Dense(num_tags) -> sigmoid.

The front and mid ends are convolutional in time, so a model takes patches of any length; the
taggers were trained on 187 frames (3 s). ``MUSICNN_SPECS`` names the published configurations.
``load_tf1_weights`` sets a model's weights from the variables of musicnn's TensorFlow 1
checkpoints (the file reading is ``msagg.stages.teacher``'s); ``build_musicnn_extractor`` gives
musicnn's ``features`` dict from one call.

keras is imported inside the builders only, so the spec table can be read without a backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

N_MELS = 96
FRONTEND_FILTERS = 1.6
"""musicnn's width factor: 1.6 x 128 = 204 timbral and 1.6 x 32 = 51 temporal filters."""
TIMBRAL = ((74, 0.4), (77, 0.7))
"""(name, fraction of the bands a timbral filter spans): 38 and 67 of 96 bands, 7 frames long."""
TIMBRAL_FRAMES = 7
TEMPORAL = (128, 64, 32)
"""Frames a temporal filter spans (one band)."""
MIDEND_FRAMES = 7
FEATURES = ("timbral", "temporal", "cnn1", "cnn2", "cnn3", "mean_pool", "max_pool", "penultimate", "taggram")
"""Keys of ``build_musicnn_extractor``'s outputs: musicnn's ``features`` keys, then the tag probabilities."""


@dataclass(frozen=True)
class MusicnnSpec:
    """One published musicnn configuration.

    Attributes:
        vocabulary: Which tag list the model predicts: "MTT" (MagnaTagATune) or "MSD" (Million Song Dataset).
        midend_filters: Filters of each mid-end convolution.
        backend_units: Units of the back end's penultimate dense layer.
        num_tags: Output units.
    """

    vocabulary: str
    midend_filters: int = 64
    backend_units: int = 200
    num_tags: int = 50


MUSICNN_SPECS = {
    "MTT_musicnn": MusicnnSpec("MTT"),
    "MSD_musicnn": MusicnnSpec("MSD"),
    # Not in the PyPI wheel (musicnn installs it only from source), same architecture, wider.
    "MSD_musicnn_big": MusicnnSpec("MSD", midend_filters=512, backend_units=500),
}
"""musicnn's model names (its ``extractor(model=...)`` values) -> configuration."""


def get_musicnn_spec(name: str) -> MusicnnSpec:
    """The configuration of a musicnn model name; ValueError naming the known ones otherwise."""
    if name not in MUSICNN_SPECS:
        raise ValueError(f"unknown musicnn model {name!r}; known: {', '.join(MUSICNN_SPECS)}")
    return MUSICNN_SPECS[name]


def timbral_bands(fraction: float) -> int:
    """Bands a timbral filter spans: int(fraction x 96), as musicnn truncates it (38, 67)."""
    return int(fraction * N_MELS)


def frontend_channels() -> int:
    """561: the front end's channels per frame (2 x 204 timbral + 3 x 51 temporal)."""
    return len(TIMBRAL) * int(FRONTEND_FILTERS * 128) + len(TEMPORAL) * int(FRONTEND_FILTERS * 32)


def build_musicnn(name: str = "MTT_musicnn", num_frames: int | None = None):
    """Builds an uncompiled musicnn tagger (random weights until ``load_tf1_weights``).

    Layer names (stable; ``load_tf1_weights`` and ``build_musicnn_extractor`` use them):
    ``input_bn``; ``timbral_pad``, ``timbral_{74,77}_{conv,bn,pool}``, ``timbral_{74,77}``,
    ``timbral``; ``temporal_{128,64,32}_{conv,bn,pool}``, ``temporal_{128,64,32}``,
    ``temporal``; ``frontend``; ``cnn{1,2,3}_conv``, ``cnn1`` (the first's BN), ``cnn{2,3}_bn``,
    ``cnn2``, ``cnn3`` (residual sums); ``midend``; ``max_pool``, ``mean_pool``,
    ``{max,mean}_pool_column``, ``pool_pairs``, ``pool``, ``pool_bn``, ``penultimate_dense``,
    ``penultimate`` (its BN), ``logits``, ``tags``.

    Args:
        name: A key of ``MUSICNN_SPECS`` ("MTT_musicnn", "MSD_musicnn", "MSD_musicnn_big").
        num_frames: Frames per patch the model accepts; None: any length (the taggers were
            trained on 187).

    Returns:
        A keras.Model mapping float32 log-mel patches (batch, num_frames, 96) to float32 tag
        probabilities (batch, num_tags).

    Raises:
        ValueError: For an unknown name.
    """
    import keras
    from keras import layers

    spec = get_musicnn_spec(name)
    inputs = keras.Input(shape=(num_frames, N_MELS), name="logmel")  # (batch, 187, 96)
    x = layers.Reshape((-1, N_MELS, 1), name="expand")(inputs)  # (batch, 187, 96, 1)
    x = layers.BatchNormalization(name="input_bn")(x)

    timbral = []
    padded = layers.ZeroPadding2D(((TIMBRAL_FRAMES // 2, TIMBRAL_FRAMES // 2), (0, 0)), name="timbral_pad")(x)
    for key, fraction in TIMBRAL:
        bands = timbral_bands(fraction)
        y = layers.Conv2D(int(FRONTEND_FILTERS * 128), (TIMBRAL_FRAMES, bands), padding="valid",
                          activation="relu", name=f"timbral_{key}_conv")(padded)  # (batch, 187, 96 - bands + 1, 204)
        timbral.append(_pool_bands(y, f"timbral_{key}", N_MELS - bands + 1))  # (batch, 187, 204)
    temporal = []
    for frames in TEMPORAL:
        y = layers.Conv2D(int(FRONTEND_FILTERS * 32), (frames, 1), padding="same", activation="relu",
                          name=f"temporal_{frames}_conv")(x)  # (batch, 187, 96, 51)
        temporal.append(_pool_bands(y, f"temporal_{frames}", N_MELS))  # (batch, 187, 51)
    timbral_out = layers.Concatenate(name="timbral")(timbral)  # (batch, 187, 408)
    temporal_out = layers.Concatenate(name="temporal")(temporal)  # (batch, 187, 153)
    frontend = layers.Concatenate(name="frontend")([timbral_out, temporal_out])  # (batch, 187, 561)

    # A Conv2D spanning all channels of one frame, as musicnn writes it, is a Conv1D over time.
    def conv_bn(z, i):
        z = layers.Conv1D(spec.midend_filters, MIDEND_FRAMES, padding="same", activation="relu",
                          name=f"cnn{i}_conv")(z)
        return layers.BatchNormalization(name="cnn1" if i == 1 else f"cnn{i}_bn")(z)  # (batch, 187, 64)

    cnn1 = conv_bn(frontend, 1)
    cnn2 = layers.Add(name="cnn2")([conv_bn(cnn1, 2), cnn1])
    cnn3 = layers.Add(name="cnn3")([conv_bn(cnn2, 3), cnn2])
    midend = layers.Concatenate(name="midend")([frontend, cnn1, cnn2, cnn3])  # (batch, 187, 753)

    max_pool = layers.GlobalMaxPooling1D(name="max_pool")(midend)  # (batch, 753)
    mean_pool = layers.GlobalAveragePooling1D(name="mean_pool")(midend)  # (batch, 753)
    # musicnn joins the two on a new last axis before flattening: max and mean alternate per channel.
    max_column = layers.Reshape((-1, 1), name="max_pool_column")(max_pool)  # (batch, 753, 1)
    mean_column = layers.Reshape((-1, 1), name="mean_pool_column")(mean_pool)
    x = layers.Concatenate(name="pool_pairs")([max_column, mean_column])  # (batch, 753, 2)
    x = layers.Flatten(name="pool")(x)  # (batch, 1506): max_0, mean_0, max_1, mean_1, ...
    x = layers.BatchNormalization(name="pool_bn")(x)
    x = layers.Dropout(0.5, name="pool_dropout")(x)
    x = layers.Dense(spec.backend_units, activation="relu", name="penultimate_dense")(x)
    x = layers.BatchNormalization(name="penultimate")(x)  # (batch, 200)
    x = layers.Dropout(0.5, name="penultimate_dropout")(x)
    x = layers.Dense(spec.num_tags, name="logits")(x)
    outputs = layers.Activation("sigmoid", name="tags")(x)  # (batch, 50)
    return keras.Model(inputs, outputs, name=name)


def _pool_bands(x, prefix: str, bands: int):
    """BN -> max over all ``bands`` -> (batch, time, filters): the end of every front-end branch."""
    from keras import layers

    x = layers.BatchNormalization(name=f"{prefix}_bn")(x)
    x = layers.MaxPooling2D((1, bands), name=f"{prefix}_pool")(x)  # (batch, time, 1, filters)
    return layers.Reshape((-1, x.shape[-1]), name=prefix)(x)  # (batch, time, filters)


def build_musicnn_extractor(model):
    """One forward pass, every intermediate representation: musicnn's ``features`` plus the taggram.

    Args:
        model: A model from ``build_musicnn``.

    Returns:
        A keras.Model mapping log-mel patches (batch, time, 96) to a dict (``FEATURES``):
        "timbral" (batch, time, 408), "temporal" (batch, time, 153), "cnn1", "cnn2", "cnn3"
        (batch, time, filters), "mean_pool", "max_pool" (batch, 561 + 3 filters),
        "penultimate" (batch, units) and "taggram" (batch, num_tags), the tag probabilities.
    """
    import keras

    names = dict(zip(FEATURES, FEATURES))
    names["taggram"] = "tags"
    outputs = {key: model.get_layer(layer).output for key, layer in names.items()}
    return keras.Model(model.inputs, outputs, name=f"{model.name}_features")


def tf1_scopes(name: str = "MTT_musicnn") -> dict[str, str]:
    """Keras layer name -> the TensorFlow 1 variable scope that holds its weights in musicnn's checkpoint.

    ``tf.compat.v1.layers`` numbered its layers per kind in the order the graph built them:
    the input BN, then each front-end branch's conv and BN, the mid end, the back end.
    """
    get_musicnn_spec(name)
    order = ["input_bn"]
    for key, _ in TIMBRAL:
        order += [f"timbral_{key}_conv", f"timbral_{key}_bn"]
    for frames in TEMPORAL:
        order += [f"temporal_{frames}_conv", f"temporal_{frames}_bn"]
    order += ["cnn1_conv", "cnn1", "cnn2_conv", "cnn2_bn", "cnn3_conv", "cnn3_bn", "pool_bn",
              "penultimate_dense", "penultimate", "logits"]
    counts = {"conv2d": 0, "batch_normalization": 0, "dense": 0}
    scopes = {}
    for layer in order:
        kind = ("batch_normalization" if layer.endswith("_bn") or layer in ("cnn1", "penultimate")
                else "conv2d" if layer.endswith("_conv") else "dense")
        scopes[layer] = kind if counts[kind] == 0 else f"{kind}_{counts[kind]}"
        counts[kind] += 1
    return scopes


_VARIABLES = {"conv2d": ("kernel", "bias"), "dense": ("kernel", "bias"),
              "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance")}


def load_tf1_weights(model, variables: Mapping[str, np.ndarray]) -> None:
    """Sets a ``build_musicnn`` model's weights from musicnn's TensorFlow 1 checkpoint variables.

    Args:
        model: A model from ``build_musicnn`` (its name a key of ``MUSICNN_SPECS``).
        variables: Checkpoint variable name ("conv2d_5/kernel", "batch_normalization/gamma", ...)
            -> value; other entries (the optimiser's slots) are ignored.

    Raises:
        ValueError: If a variable is missing or its size does not fit the layer (another architecture).
    """
    for layer_name, scope in tf1_scopes(model.name).items():
        layer = model.get_layer(layer_name)
        kind = scope.rsplit("_", 1)[0] if scope[-1].isdigit() else scope
        values = []
        for var, weight in zip(_VARIABLES[kind], layer.weights):
            key = f"{scope}/{var}"
            if key not in variables:
                raise ValueError(f"checkpoint has no variable {key!r} (for layer {layer_name!r})")
            value = np.asarray(variables[key], dtype=np.float32)
            if value.size != int(np.prod(weight.shape)):
                raise ValueError(f"checkpoint variable {key!r} has shape {value.shape}; layer {layer_name!r} "
                                 f"needs {tuple(weight.shape)}: not a {model.name} checkpoint")
            # Mid-end kernels (7, channels, 1, filters) in TF1 are Conv1D kernels (7, channels, filters).
            values.append(value.reshape(tuple(weight.shape)))
        layer.set_weights(values)
