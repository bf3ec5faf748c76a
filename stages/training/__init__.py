"""The parts of pretraining: the input (crops, augment), the loop (fit), checkpoints, devices, evaluation, logs."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from msagg.data.errors import MsaggError

MIN_VAL_LOSS_IMPROVEMENT = 0.02
"""The relative drop of the validation loss, from the first epoch to the best one, below which a
model counts as not having learned (``learning_check``)."""


class PretrainError(MsaggError):
    """A pretraining run that cannot go on: no train or valid tracks, a diverged run, no model file."""


def learning_check(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Whether a model learned: its best validation loss clearly below its first epoch's.

    "Clearly" means by at least ``MIN_VAL_LOSS_IMPROVEMENT`` (2%) of the first epoch's loss:
    ``(first - best) / first >= 0.02``. A model whose best epoch is its first, or whose loss after
    every later epoch stays within 2% of it (the demo's 3^9 once: 0.637 at epoch 1, best 0.635),
    learned nothing the validation split can see; so did one whose first loss is already 0 (a
    single class). The first epoch is the first with a finite validation loss.

    Args:
        history: The per-epoch rows of training (``val_loss``: float, or None where not finite).

    Returns:
        ``{"learned": bool | None, "first_val_loss": float | None, "val_loss_improvement": float | None}``
        (the improvement as a fraction of the first loss; all None without a finite validation loss).
    """
    losses = [float(r["val_loss"]) for r in history if r.get("val_loss") is not None
              and math.isfinite(float(r["val_loss"]))]
    if not losses:
        return {"learned": None, "first_val_loss": None, "val_loss_improvement": None}
    first, best = losses[0], min(losses)
    improvement = (first - best) / first if first > 0 else 0.0
    return {"learned": improvement >= MIN_VAL_LOSS_IMPROVEMENT, "first_val_loss": first,
            "val_loss_improvement": round(improvement, 6)}
