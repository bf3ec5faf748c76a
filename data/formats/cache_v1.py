"""Reading the /audio of a schema-1 audio cache (one ``cache.h5`` of an older msagg, or its linked form).

``msagg.data.formats.cache.AudioCache`` reads such a cache as a cache of one shard: the file holding
/audio (the layout is in ``msagg.data.formats.cache_layout``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import h5py
import numpy as np

from msagg.data.formats.cache_layout import CacheError

LINK_ATTRS = ("audio_config_hash", "audio_num_samples")
"""Attributes of a schema-1 linked cache only (its /audio an external link)."""


@dataclasses.dataclass
class V1Audio:
    """The /audio of a schema-1 cache, opened.

    Attributes:
        audio: The int16 (num_samples,) dataset.
        handle: The audio store's file, opened here for a linked cache (the reader closes it); else None.
        linked: Whether /audio is an external link to another cache.
        file: The file holding /audio (the cache itself, or the store).
        config_hash: config_hash of the run that decoded the samples.
        num_samples: Length of /audio.
    """

    audio: h5py.Dataset
    handle: h5py.File | None
    linked: bool
    file: Path
    config_hash: str
    num_samples: int


def open_v1_audio(path: Path, f: h5py.File, config_hash: str, offsets: np.ndarray, lengths: np.ndarray) -> V1Audio:
    """This file's /audio, or the one its external link names (opened here, checked against the pins).

    Args:
        path: The cache file (for messages and to resolve the link).
        f: It, open.
        config_hash: Its config_hash attribute.
        offsets, lengths: int64 (num_tracks,), where its tracks lie in /audio.

    Raises:
        CacheError: For a linked cache whose pins are missing, whose store is missing, unreadable,
            holds no int16 /audio, was replaced, or is shorter than its tracks.
    """
    link = f.get("audio", getlink=True)
    if not isinstance(link, h5py.ExternalLink):
        audio = f["audio"]
        return V1Audio(audio, None, False, path, config_hash, int(audio.shape[0]))
    store = Path(os.path.normpath(path.parent / link.filename))
    missing = [name for name in LINK_ATTRS if name not in f.attrs]
    if missing:
        raise CacheError(f"{path}: incomplete audio cache, /audio links to {store} but attribute "
                         f"{', '.join(missing)} is missing")
    expected = (str(f.attrs["audio_config_hash"]), int(f.attrs["audio_num_samples"]))
    if not store.is_file():
        raise CacheError(f"{path}: its audio lies in {store}, which is missing (move prepare run folders "
                         "together, or prepare the dataset again)")
    try:
        handle = h5py.File(store, "r")
    except OSError as err:
        raise CacheError(f"{path}: its audio lies in {store}, which is not a readable HDF5 file "
                         f"({first_line(err)})") from None
    try:
        audio = handle.get(link.path)
        if not isinstance(audio, h5py.Dataset) or audio.ndim != 1 or audio.dtype != np.int16:
            raise CacheError(f"{path}: its audio lies in {store}, which holds no int16 {link.path}")
        found = (str(handle.attrs.get("config_hash", "")), int(audio.shape[0]))
        if found != expected:
            raise CacheError(f"{path}: its audio store {store} was replaced (config hash {found[0]}, "
                             f"{found[1]} samples; expected {expected[0]}, {expected[1]}); prepare the dataset again")
        if offsets.shape[0] and (offsets.min() < 0 or (offsets + lengths).max() > found[1]):
            raise CacheError(f"{path}: tracks lie outside the {found[1]} samples of its audio "
                             f"store {store}; prepare the dataset again")
    except BaseException:
        handle.close()
        raise
    return V1Audio(audio, handle, True, store, *found)


def first_line(err: BaseException) -> str:
    """The first line of an error's message (HDF5's run over several), or its type's name."""
    text = str(err)
    return text.splitlines()[0] if text else type(err).__name__
