"""Keeps the backend's C++ start-up lines off a normal run's terminal.

TensorFlow 2.2x logs through absl before Python can configure anything, and no environment
variable silences it any longer (``TF_CPP_MIN_LOG_LEVEL`` is ignored by those lines): every
command would open with "oneDNN custom operations are on", "Could not find cuda drivers" and, on
some machines, an ``E0000 ... cuInit`` error. ``import_backend`` imports Keras (and so the
backend) with file descriptor 2 pointed at a temporary file, then replays every captured line
that is not one of those known notices, so nothing else the import prints is lost.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
import tempfile

NOISE = re.compile(
    r"All log messages before absl::InitializeLog"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers"
    r"|cpu_feature_guard|To enable the following instructions"
    r"|rebuild TensorFlow with the appropriate compiler flags"
    r"|failed call to cuInit|cuInit: UNKNOWN ERROR|CUDA_ERROR_NO_DEVICE"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
)
"""Start-up notices that say nothing about the user's run."""

BACKEND_LOGGERS = ("tensorflow", "absl", "jax")
"""Python loggers of the backends."""

_VERBOSE = False
"""Whether the CLI asked for everything (``--log-level debug``): then the backend's lines are not filtered."""


def quiet_backend_loggers(verbose: bool) -> None:
    """The backends' Python loggers at ERROR (NOTSET when ``verbose``): TensorFlow warns "tf.function
    retracing" as soon as five models (one per scale) each trace their predict function once."""
    global _VERBOSE
    _VERBOSE = verbose
    for name in BACKEND_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)


def filter_noise(text: str) -> str:
    """Drops the known start-up notices from captured stderr text; keeps every other line."""
    return "".join(line for line in text.splitlines(keepends=True) if not NOISE.search(line))


@contextlib.contextmanager
def _stderr_captured():
    """Points fd 2 at a temporary file; yields a list that receives the captured text on exit."""
    sys.stderr.flush()
    saved = os.dup(2)
    captured: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode("utf-8", "replace"))


def import_backend(verbose: bool | None = None) -> None:
    """Imports Keras and initializes its backend's devices, hiding the known start-up notices.

    The stages call it once their config is checked and their run folder locked, just before they
    need Keras, so that a refusal never waits for the backend to start.

    Args:
        verbose: Show everything; then nothing is captured. Default: what ``quiet_backend_loggers``
            was last told (the CLI's ``--log-level debug``).
    """
    verbose = _VERBOSE if verbose is None else verbose
    if verbose or "keras" in sys.modules:
        importlib.import_module("keras")
        return
    with _stderr_captured() as captured:
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices()  # cuInit happens here, inside the capture
    rest = filter_noise("".join(captured))
    if rest:
        sys.stderr.write(rest)
        sys.stderr.flush()
