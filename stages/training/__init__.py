"""The parts of pretraining: the input (crops, augment), the loop (fit), checkpoints, devices, evaluation, logs."""

from msagg.data.errors import MsaggError


class PretrainError(MsaggError):
    """A pretraining run that cannot go on: no train or valid tracks, a diverged run, no model file."""
