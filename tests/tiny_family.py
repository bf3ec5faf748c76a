"""A family of SampleCNNs trained for real on the tiny preset, for the tests of the API, embed and predict."""

from __future__ import annotations

from pathlib import Path

from msagg.stages import prepare, pretrain

SAMPLE_RATE = 2000
"""Low, so that a few seconds of audio are a few segments of the tiny scales (3^2: 27 samples, 4^2: 64)."""


def train(root: Path) -> Path:
    """Prepares the tiny synth-tags dataset at ``SAMPLE_RATE`` and pretrains the tiny preset on it.

    Returns:
        The finished pretrain run folder (scales 3^2 and 4^2, tags of the synth-tags dataset).
    """
    prep = root / "prepare"
    prepare.run(prepare.Config(**{**prepare.PRESETS["tiny"], "num_tracks": 10, "sample_rate": SAMPLE_RATE}), prep,
                workers=1, progress=False)
    config = pretrain.Config(cache=str(prep), **{**pretrain.PRESETS["tiny"], "augment": False})
    return pretrain.run(config, root / "pretrain", progress=False, tensorboard=False)
