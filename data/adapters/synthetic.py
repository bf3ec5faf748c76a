"""The generated datasets: synth-tags and synth-genre, listed from ``data.synth`` (no audio rendered)."""

from __future__ import annotations

import numpy as np

from data.adapters.common import Adapter, DatasetError, Listing, Problems
from data.adapters.options import AdapterOptions

GENRE_SEED_OFFSET = 1000
"""synth-genre draws its corpus with ``seed + GENRE_SEED_OFFSET``, so that features pretrained on
synth-tags (``seed``) are evaluated on songs they never heard."""

CORPUS_DEFAULTS = {"num_tracks": 300, "seed": 0, "min_sec": 10.0, "max_sec": 30.0}
"""The corpus when the options leave its size None: about 1.7 h of audio."""


def _list_synth(name: str, genre: bool, source, opts: AdapterOptions, problems: Problems) -> Listing:
    if source is not None:
        problems.add("unused option", f"source={source!r}: {name} is generated, it has no source")
    problems.raise_if_any()
    try:
        from data import synth
    except ImportError as err:  # pragma: no cover - only while data.synth is missing
        raise DatasetError(name, {"synthetic corpus unavailable": [str(err)]}) from err

    corpus_seed = opts.seed + (GENRE_SEED_OFFSET if genre else 0)
    try:
        tracks = synth.describe(opts.num_tracks, corpus_seed, opts.min_sec, opts.max_sec)
    except ValueError as err:
        raise DatasetError(name, {"bad option": [str(err)]}) from None
    label_names = list(synth.SYNTH_GENRES if genre else synth.SYNTH_TAGS)
    column = {n: i for i, n in enumerate(label_names)}
    labels = np.zeros((len(tracks), len(label_names)), dtype=np.uint8)
    for row, track in enumerate(tracks):
        for label in [track.genre] if genre else track.tags:
            if label not in column:
                problems.add("unknown label", f"track {track.index}: {label!r}")
            else:
                labels[row, column[label]] = 1
    problems.raise_if_any()
    return Listing(
        name=name,
        task="classes" if genre else "tags",
        label_names=label_names,
        track_ids=[f"synth{corpus_seed}-{t.index:05d}" for t in tracks],
        sources=[synth.source_string(corpus_seed, t.index, opts.min_sec, opts.max_sec) for t in tracks],
        labels=labels,
        fold_names=None,
        info={
            "corpus": {
                "seed": int(corpus_seed),
                "num_tracks": int(opts.num_tracks),
                "min_sec": float(opts.min_sec),
                "max_sec": float(opts.max_sec),
            }
        },
    )


def _tag_levels() -> dict[str, str]:
    from data import synth

    return dict(synth.TAG_LEVELS)


def _list_synth_tags(source, opts: AdapterOptions, problems: Problems) -> Listing:
    return _list_synth("synth-tags", False, source, opts, problems)


def _list_synth_genre(source, opts: AdapterOptions, problems: Problems) -> Listing:
    return _list_synth("synth-genre", True, source, opts, problems)


SYNTH_TAGS = Adapter("synth-tags", _list_synth_tags, "generated songs, tags", generated=True,
                     defaults=CORPUS_DEFAULTS, label_groups=_tag_levels)
SYNTH_GENRE = Adapter("synth-genre", _list_synth_genre, "generated songs, one genre each",
                      generated=True, defaults=CORPUS_DEFAULTS)
