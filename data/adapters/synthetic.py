"""The generated datasets: synth-tags and synth-genre (``msagg.data.synth.music``), synth-gm-tags and synth-gm-genre
(``msagg.data.synth.gm``, rendered through a General MIDI SoundFont), listed without rendering any audio."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from msagg.data.adapters.common import Adapter, DatasetError, Listing, Problems
from msagg.data.adapters.options import AdapterOptions

logger = logging.getLogger(__name__)

GENRE_SEED_OFFSET = 1000
"""synth-genre (synth-gm-genre) draws its corpus with ``seed + GENRE_SEED_OFFSET``, so that features
pretrained on synth-tags (synth-gm-tags, ``seed``) are evaluated on songs they never heard."""

CORPUS_DEFAULTS = {"num_tracks": 300, "seed": 0, "min_sec": 10.0, "max_sec": 30.0}
"""The corpus when the options leave its size None: about 1.7 h of audio."""


def _corpus(name: str) -> tuple[Any, tuple[str, ...], tuple[str, ...]]:
    """The module that describes the corpus of ``name``, its tags and its genres (imported on use)."""
    if name.startswith("synth-gm-"):
        from msagg.data.synth import gm as synth_gm

        return synth_gm, synth_gm.SYNTH_GM_TAGS, synth_gm.SYNTH_GM_GENRES
    from msagg.data.synth import music as synth

    return synth, synth.SYNTH_TAGS, synth.SYNTH_GENRES


def _list_synth(name: str, genre: bool, source, opts: AdapterOptions, problems: Problems) -> Listing:
    if source is not None:
        problems.add("unused option", f"source={source!r}: {name} is generated, it has no source")
    problems.raise_if_any()
    corpus, tag_names, genre_names = _corpus(name)
    gm = name.startswith("synth-gm-")
    corpus_seed = opts.seed + (GENRE_SEED_OFFSET if genre else 0)
    size = (opts.num_tracks, corpus_seed, opts.min_sec, opts.max_sec)
    extra: dict[str, Any] = {}
    named: dict[str, Any] = {}
    if gm:
        from msagg.data.synth import soundfont

        chosen = _soundfont(opts)  # the file and the renderer are checked before anything is listed
        extra = {"soundfont": chosen.path, "soundfont_sha256": chosen.sha256,
                 "renderer": f"tinysoundfont {soundfont.version()}"}
        # The sources name a chosen SoundFont by its absolute path, the default by nothing.
        named = {"soundfont": None if chosen.default else chosen.path}
        logger.info("%s: rendering with %s (sha256 %s)", name, chosen.path, chosen.sha256[:12])
    try:
        tracks = corpus.describe(*size, **named)
    except ValueError as err:
        raise DatasetError(name, {"bad option": [str(err)]}) from None
    label_names = list(genre_names if genre else tag_names)
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
        track_ids=[f"{'synthgm' if gm else 'synth'}{corpus_seed}-{t.index:05d}" for t in tracks],
        sources=[t.source for t in tracks],
        labels=labels,
        fold_names=None,
        info={
            "corpus": {
                "seed": int(corpus_seed),
                "num_tracks": int(opts.num_tracks),
                "min_sec": float(opts.min_sec),
                "max_sec": float(opts.max_sec),
                **extra,
            }
        },
    )


def _soundfont(opts: AdapterOptions):
    """The SoundFont the options name, checked: renderer installed, file readable, sha256 as pinned.

    Raises:
        msagg.data.synth.soundfont.SoundFontError: For a missing or unreadable file or one that is no SoundFont,
            when tinysoundfont is missing (saying how to install it), or for a file whose sha256 is
            not ``soundfont_sha256``; one line naming the file.
    """
    from msagg.data.synth import soundfont

    chosen = soundfont.resolve(opts.soundfont)
    soundfont.renderer()
    if opts.soundfont_sha256 is not None and opts.soundfont_sha256 != chosen.sha256:
        raise soundfont.SoundFontError(
            f"{chosen.path}: sha256 {chosen.sha256}, not soundfont_sha256={opts.soundfont_sha256} as the config "
            "pins it: the SoundFont changed; restore that file, or leave soundfont_sha256 unset to render with this "
            "one (into another folder, or with --overwrite)"
        )
    return chosen


def _pin_soundfont(opts: AdapterOptions) -> dict[str, str]:
    """``{"soundfont_sha256": ...}`` of the SoundFont the options name (``Adapter.pin``); see ``_soundfont``."""
    return {"soundfont_sha256": _soundfont(opts).sha256}


def _tag_levels() -> dict[str, str]:
    from msagg.data.synth import music as synth

    return dict(synth.TAG_LEVELS)


def _gm_tag_levels() -> dict[str, str]:
    from msagg.data.synth import gm as synth_gm

    return dict(synth_gm.TAG_LEVELS)


def _list_synth_tags(source, opts: AdapterOptions, problems: Problems) -> Listing:
    return _list_synth("synth-tags", False, source, opts, problems)


def _list_synth_genre(source, opts: AdapterOptions, problems: Problems) -> Listing:
    return _list_synth("synth-genre", True, source, opts, problems)


def _list_synth_gm_tags(source, opts: AdapterOptions, problems: Problems) -> Listing:
    return _list_synth("synth-gm-tags", False, source, opts, problems)


def _list_synth_gm_genre(source, opts: AdapterOptions, problems: Problems) -> Listing:
    return _list_synth("synth-gm-genre", True, source, opts, problems)


SYNTH_TAGS = Adapter("synth-tags", _list_synth_tags, "generated songs, tags", generated=True,
                     defaults=CORPUS_DEFAULTS, label_groups=_tag_levels)
SYNTH_GENRE = Adapter("synth-genre", _list_synth_genre, "generated songs, one genre each",
                      generated=True, defaults=CORPUS_DEFAULTS)
SYNTH_GM_TAGS = Adapter("synth-gm-tags", _list_synth_gm_tags, "generated songs played by General MIDI instruments of "
                        "a SoundFont, tags", generated=True, defaults=CORPUS_DEFAULTS, label_groups=_gm_tag_levels,
                        soundfont=True, pin=_pin_soundfont)
SYNTH_GM_GENRE = Adapter("synth-gm-genre", _list_synth_gm_genre, "generated songs played by General MIDI "
                         "instruments of a SoundFont, one genre each", generated=True, defaults=CORPUS_DEFAULTS,
                         soundfont=True, pin=_pin_soundfont)
