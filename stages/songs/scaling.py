"""How song vectors are scaled before a classifier sees them: standardization with train statistics,
and for a joined feature set (learned + MFCC, ...) a weight per block so that none swamps another.

Standardizing gives every dimension unit variance, so a block of 1,000 dimensions outweighs one of
120 nearly tenfold in distances (the SVM) and in the share of an L2 penalty (the logistic
regression). A joined set's blocks are therefore each divided by the square root of their
dimension as well: every block then holds the same total variance (1) on the training songs. One
more weight per block is chosen by cross-validation (``weightings``: alike, one block alone, one at
half weight; ``msagg.stages.songs.choice.choose_weights``), so that a join never scores below its best
part on the training songs. The weights are folded into the standardizer's scale, so a saved
classifier applies them at predict time with no other change.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class Standardizer:
    """Feature standardization with train-split statistics (sklearn ``StandardScaler``), each block of
    a joined set then weighted by 1 / sqrt(its dimension).

    Args:
        mean: float32 (dim,).
        scale: float32 (dim,): the standard deviation (1 for constant features), times
            sqrt(block dimension) in a joined set.
        blocks: Dimensions of the blocks, in order (they sum to dim); a single block is not weighted.
    """

    def __init__(self, mean: np.ndarray, scale: np.ndarray, blocks: Sequence[int] = ()):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.scale = np.asarray(scale, dtype=np.float32)
        self.blocks = tuple(int(b) for b in blocks) or (int(self.mean.shape[0]),)

    @classmethod
    def fit(cls, x_train: np.ndarray, blocks: Sequence[int] = (), weights: Sequence[float] | None = None
            ) -> "Standardizer":
        """Statistics of the training songs.

        Args:
            x_train: float32 (n, dim).
            blocks: Dimensions of the blocks of a joined set (``featuresets.block_dims``); empty or
                one block: plain standardization.
            weights: One more factor per block (``weightings``; 0 leaves a block out); None: all 1.

        Raises:
            ValueError: If the blocks do not sum to dim.
        """
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x_train)
        scale = scaler.scale_ * block_weights(x_train.shape[1], blocks)  # scale_ is 1 for constant features
        if weights is not None and len(blocks) >= 2:
            factor = np.repeat(np.asarray(weights, dtype=np.float64), [int(b) for b in blocks])
            with np.errstate(divide="ignore"):
                scale = scale / factor  # weight 0: an infinite scale, so the block reads 0
        return cls(scaler.mean_, scale, blocks)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.scale).astype(np.float32)


def block_weights(dim: int, blocks: Sequence[int] = ()) -> np.ndarray:
    """float64 (dim,): sqrt(block dimension) over each block's columns when there are several blocks,
    else ones (what the standard deviation is multiplied by).

    Raises:
        ValueError: If the blocks do not sum to ``dim``.
    """
    blocks = [int(b) for b in blocks]
    if blocks and sum(blocks) != dim:
        raise ValueError(f"blocks {blocks} do not sum to the {dim} dimensions")
    if len(blocks) < 2:
        return np.ones(dim)
    return np.repeat(np.sqrt(np.asarray(blocks, dtype=np.float64)), blocks)


def weightings(num_blocks: int) -> list[tuple[float, ...]]:
    """The block weights a joined set's cross-validation tries: all alike, each block alone (the
    others weighted 0), and each block at half weight. Since each part alone is among them, the
    joined set's cross-validated score is never below its best part's."""
    if num_blocks < 2:
        return [(1.0,)]
    alike = (1.0,) * num_blocks
    alone = [tuple(1.0 if j == i else 0.0 for j in range(num_blocks)) for i in range(num_blocks)]
    half = [tuple(0.5 if j == i else 1.0 for j in range(num_blocks)) for i in range(num_blocks)]
    return [alike, *alone, *half]
