"""Figures (PNG): per-label score bars, the per-label layer heat map and t-SNE maps of song features
(classify), training curves (pretrain)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from msagg.data.atomic import atomic_write  # noqa: E402

logger = logging.getLogger(__name__)


def _save(fig, path: str | os.PathLike) -> Path:
    """Writes ``fig`` as a PNG atomically and closes it (``WriteError`` if the disk refuses)."""
    path = Path(path)
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def per_label_bars(
    path: str | os.PathLike,
    label_names: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    metric: str,
    title: str,
    chance: float | None = None,
) -> Path:
    """Grouped bars: one group per label, one bar per series (e.g. two feature sets).

    Args:
        path: PNG to write.
        label_names: Labels, in the order of every series.
        series: Legend name -> per-label scores (None: not scored; drawn as no bar).
        metric: Axis title, e.g. "ROC-AUC".
        title: Figure title.
        chance: Draws a dashed line at this score.

    Returns:
        ``path`` as a Path.
    """
    num = len(label_names)
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * num + 2), 4.0))
    x = np.arange(num)
    for k, (name, values) in enumerate(series.items()):
        heights = np.array([np.nan if v is None else float(v) for v in values])
        ax.bar(x - 0.4 + width * (k + 0.5), np.nan_to_num(heights, nan=0.0), width, label=name)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
    ax.set_xticks(x)
    ax.set_xticklabels(label_names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_ylim(0.0, 1.0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def tsne_embed(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of song vectors.

    Args:
        features: (num_songs, dim), num_songs >= 3.
        seed: Random state (fixed for reproducible maps).

    Returns:
        float (num_songs, 2).
    """
    from sklearn.manifold import TSNE

    n = features.shape[0]
    tsne = TSNE(n_components=2, perplexity=float(min(30, n - 1)), init="pca", learning_rate="auto",
                random_state=seed)
    return tsne.fit_transform(np.asarray(features, dtype=np.float64))


def tsne_maps(
    path: str | os.PathLike,
    maps: Mapping[str, np.ndarray],
    colour: np.ndarray,
    colour_names: Sequence[str],
    title: str,
) -> Path:
    """Side-by-side scatter plots of 2-D embeddings of the same songs (the paper's Figure 2).

    Args:
        path: PNG to write.
        maps: Panel title -> (num_songs, 2) coordinates.
        colour: int (num_songs,) category of each song, indexing ``colour_names``.
        colour_names: Legend names of the categories.
        title: Figure title.

    Returns:
        ``path`` as a Path.
    """
    colour = np.asarray(colour, dtype=int)
    cmap = plt.get_cmap("tab10" if len(colour_names) <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(maps), figsize=(5.0 * len(maps), 4.6), squeeze=False)
    for ax, (panel, xy) in zip(axes[0], maps.items()):
        for k, name in enumerate(colour_names):
            mask = colour == k
            if mask.any():
                ax.scatter(xy[mask, 0], xy[mask, 1], s=14, color=cmap(k % cmap.N), label=name, alpha=0.8,
                           edgecolors="none")
        ax.set_title(panel, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def training_curves(
    path: str | os.PathLike,
    history_rows: Sequence[Mapping[str, object]],
    title: str,
    metric_name: str,
) -> Path:
    """Training curves of one model: losses and the validation metric per epoch, lr stages marked.

    Two panels sharing the epoch axis: the training loss and the validation loss (the lowest
    validation loss circled), and the song-level validation metric. A dotted vertical line marks
    where each learning-rate stage begins, labelled with its learning rate.

    Args:
        path: PNG to write (atomically, so a viewer that reloads it never sees half a file).
        history_rows: One mapping per epoch with ``epoch``, ``lr_stage``, ``lr``, ``loss``,
            ``val_loss`` and ``val_song_metric`` (the rows of pretrain's ``history.csv``, as dicts
            of numbers, or of strings as read back from the CSV); None, "" or a non-finite value
            is a missing point. A single epoch gives single points.
        title: Figure title, e.g. "3^9 on synth-tags".
        metric_name: Name of the validation metric, e.g. "roc_auc".

    Returns:
        ``path`` as a Path.
    """

    def column(key: str) -> np.ndarray:
        values = []
        for row in history_rows:
            value = row.get(key)
            try:
                values.append(float(value) if value not in (None, "") else np.nan)
            except (TypeError, ValueError):
                values.append(np.nan)
        return np.array(values, dtype=float)

    epochs, stages, lrs = column("epoch"), column("lr_stage"), column("lr")
    loss, val_loss, metric = column("loss"), column("val_loss"), column("val_song_metric")
    fig, (ax_loss, ax_metric) = plt.subplots(2, 1, figsize=(7.0, 5.6), sharex=True,
                                             gridspec_kw={"height_ratios": [3, 2]})
    ax_loss.plot(epochs, loss, marker="o", markersize=3, label="loss (train)")
    ax_loss.plot(epochs, val_loss, marker="o", markersize=3, label="val_loss")
    if np.isfinite(val_loss).any():
        best = int(np.nanargmin(val_loss))
        ax_loss.plot(epochs[best], val_loss[best], marker="o", markersize=10, fillstyle="none", color="black",
                     linestyle="none", label=f"best val_loss (epoch {epochs[best]:g})")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=8, loc="best")
    ax_metric.plot(epochs, metric, marker="o", markersize=3, color="tab:green")
    ax_metric.set_ylabel(f"val {metric_name} (song)")
    ax_metric.set_xlabel("epoch")
    # A stage begins at its first epoch; the line sits half an epoch before it.
    for i in range(len(epochs)):
        if i == 0 or stages[i] != stages[i - 1]:
            x = epochs[i] - 0.5
            for ax in (ax_loss, ax_metric):
                ax.axvline(x, color="grey", linestyle=":", linewidth=1)
            ax_loss.text(x, 1.0, f" lr {lrs[i]:.3g}", transform=ax_loss.get_xaxis_transform(), fontsize=7,
                         va="bottom", ha="left", color="dimgrey")
    if len(epochs):
        ax_metric.set_xlim(np.nanmin(epochs) - 0.6, np.nanmax(epochs) + 0.6)
    ax_metric.xaxis.get_major_locator().set_params(integer=True)
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


MAX_ANNOTATED_CELLS = 400
"""Heat maps with at most this many cells show their values."""


def per_label_heatmap(
    path: str | os.PathLike,
    label_names: Sequence[str],
    label_groups: Sequence[str] | None,
    columns: Sequence[str],
    scores: np.ndarray,
    metric: str,
    title: str,
    center: float | None = None,
) -> Path:
    """Heat map of per-label scores: one row per label, one column per feature set.

    Args:
        path: PNG to write.
        label_names: Row labels, grouped (rows of one group adjacent).
        label_groups: Group of each row (None: no groups); lines separate the groups, named at
            the right.
        columns: Column titles, e.g. "3^9 -1".
        scores: float (num_labels, num_columns); NaN: not scored (grey).
        metric: Colour-bar title, e.g. "ROC-AUC".
        title: Figure title.
        center: Diverging colours centred here (e.g. chance, 0.5 for ROC-AUC); None: sequential.

    Returns:
        ``path`` as a Path.
    """
    from matplotlib.colors import Normalize, TwoSlopeNorm

    scores = np.asarray(scores, dtype=float)
    num_rows, num_cols = scores.shape
    if center is not None and 0.0 < center < 1.0:
        cmap, norm = plt.get_cmap("RdBu_r"), TwoSlopeNorm(vcenter=center, vmin=0.0, vmax=1.0)
    else:
        cmap, norm = plt.get_cmap("viridis"), Normalize(vmin=0.0, vmax=1.0)
    cmap = cmap.with_extremes(bad="lightgrey")
    fig, ax = plt.subplots(figsize=(max(4.5, 0.75 * num_cols + 3.5), max(3.0, 0.32 * num_rows + 1.6)))
    image = ax.imshow(np.ma.masked_invalid(scores), cmap=cmap, norm=norm, aspect="auto")
    if scores.size <= MAX_ANNOTATED_CELLS:
        for i in range(num_rows):
            for j in range(num_cols):
                value = scores[i, j]
                text = "n/a" if not np.isfinite(value) else f"{value:.2f}"
                shade = float(norm(value)) if np.isfinite(value) else 0.5
                dark = abs(shade - 0.5) > 0.3 if center is not None else shade < 0.5
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(np.arange(num_cols))
    ax.set_xticklabels(columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(np.arange(num_rows))
    ax.set_yticklabels(label_names, fontsize=8)
    if label_groups is not None:
        starts = [i for i in range(num_rows) if i == 0 or label_groups[i] != label_groups[i - 1]]
        for k, start in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else num_rows
            if start > 0:
                ax.axhline(start - 0.5, color="black", linewidth=1.5)
            ax.text(num_cols - 0.5 + 0.15, (start + end - 1) / 2, label_groups[start], rotation=-90, ha="left",
                    va="center", fontsize=8, fontweight="bold")
    colorbar = fig.colorbar(image, ax=ax, pad=0.08 if label_groups is not None else 0.03)
    colorbar.set_label(metric)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
