"""Teacher labels: a tagger's tag probabilities per 3-s patch of every track of an audio cache.

``msagg teach`` writes ``labels.h5`` in its run folder; pretrain reads it (``--teacher-labels``) to
train on soft targets. Layout (schema 1):

- attributes: ``schema_version``, ``teachers`` (JSON list of the taggers, in column order),
  ``patch_seconds`` and ``hop_seconds`` (where patch p of a track lies: [p hop, p hop + patch) s),
  ``cache_config_hash`` (the prepare run the probabilities belong to), ``num_tracks``.
- ``track_ids`` (num_tracks,) str: the cache's ids, in its order.
- ``offsets`` (num_tracks + 1,) int64: track i's patches are rows offsets[i]:offsets[i+1].
- ``probs`` (num_patches, num_columns) float32: the probabilities, every tagger's tags side by side.
- ``tag_names``, ``teacher_of_tag`` (num_columns,) str: each column's tag and the tagger giving it.
- ``features`` (num_patches, dim) float16, optional (``msagg teach --set features=true``): the first
  tagger's own view of each patch (for musicnn its back end's mean and max pools), with the attribute
  ``features_source`` naming the tagger and layers. Files without it read with ``features`` None.

``TeacherLabels`` reads a file whole (a 20-hour corpus holds about 24 000 patches: 10 MB for two
50-tag taggers) and gives a vocabulary's probabilities: one tagger's tags, or ``"both"``: the union of
every tagger's tags, a tag several taggers predict averaged over them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from msagg.data.atomic import atomic_write
from msagg.data.errors import MsaggError

SCHEMA_VERSION = 1
FILE_NAME = "labels.h5"
BOTH = "both"
"""The vocabulary of every tagger's tags together."""


class TeacherLabelsError(MsaggError):
    """A teacher labels file that is missing, of another schema, or of another cache."""


def vocabulary_names(teachers) -> tuple[str, ...]:
    """The vocabularies a file of these taggers offers: each tagger's short name ("MTT"), then "both" if several."""
    short = tuple(t.split("_")[0] for t in teachers)
    return short + ((BOTH,) if len(short) > 1 else ())


def write_labels(path: str | os.PathLike, *, teachers, tag_names, teacher_of_tag, track_ids, per_track,
                 patch_seconds: float, hop_seconds: float, cache_config_hash: str,
                 per_track_features=None, features_source: str = "") -> None:
    """Writes a labels file atomically.

    Args:
        per_track: One float32 (num_patches, num_columns) array per track, in ``track_ids``' order.
        per_track_features: None, or one (num_patches, dim) array per track (stored as float16).
        features_source: What the features are (an attribute of the file).
    """
    lengths = np.array([len(p) for p in per_track], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    probs = np.concatenate(per_track).astype(np.float32) if per_track else np.zeros((0, len(tag_names)), np.float32)
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(schema_version=SCHEMA_VERSION, teachers=json.dumps(list(teachers)),
                       patch_seconds=float(patch_seconds), hop_seconds=float(hop_seconds),
                       cache_config_hash=str(cache_config_hash), num_tracks=len(track_ids))
        text = h5py.string_dtype()
        f.create_dataset("track_ids", data=np.array(list(track_ids), dtype=object), dtype=text)
        f.create_dataset("tag_names", data=np.array(list(tag_names), dtype=object), dtype=text)
        f.create_dataset("teacher_of_tag", data=np.array(list(teacher_of_tag), dtype=object), dtype=text)
        f.create_dataset("offsets", data=offsets)
        f.create_dataset("probs", data=probs, compression="gzip", shuffle=True, fletcher32=True,
                         chunks=(min(max(len(probs), 1), 4096), probs.shape[1]) if probs.size else None)
        if per_track_features is not None:
            if [len(p) for p in per_track_features] != lengths.tolist():
                raise ValueError("per_track_features must hold as many patches per track as per_track")
            feats = np.concatenate(per_track_features).astype(np.float16)
            f.attrs["features_source"] = str(features_source)
            f.create_dataset("features", data=feats, compression="gzip", shuffle=True, fletcher32=True,
                             chunks=(min(max(len(feats), 1), 1024), feats.shape[1]) if feats.size else None)


class TeacherLabels:
    """A labels file read whole.

    Attributes:
        path: The file.
        teachers: The taggers, in column order.
        patch_seconds, hop_seconds: Where a patch lies (see the module docstring).
        cache_config_hash: The prepare run the probabilities belong to.
        track_ids: list[str].
        offsets: int64 (num_tracks + 1,).
        probs: float32 (num_patches, num_columns).
        tag_names, teacher_of_tag: list[str] (num_columns,).
        features: float16 (num_patches, dim), or None where the file holds none.
        features_source: What ``features`` are ("" without them).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            self.path = self.path / FILE_NAME
        if not self.path.is_file():
            raise TeacherLabelsError(f"{self.path}: no teacher labels there (msagg teach writes {FILE_NAME})")
        try:
            with h5py.File(self.path, "r") as f:
                version = int(f.attrs.get("schema_version", 0))
                if version != SCHEMA_VERSION:
                    raise TeacherLabelsError(f"{self.path}: teacher labels of schema {version}; this msagg reads "
                                             f"{SCHEMA_VERSION}")
                self.teachers = json.loads(f.attrs["teachers"])
                self.patch_seconds = float(f.attrs["patch_seconds"])
                self.hop_seconds = float(f.attrs["hop_seconds"])
                self.cache_config_hash = str(f.attrs["cache_config_hash"])
                self.track_ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["track_ids"][()]]
                self.tag_names = [s.decode() if isinstance(s, bytes) else str(s) for s in f["tag_names"][()]]
                self.teacher_of_tag = [s.decode() if isinstance(s, bytes) else str(s)
                                       for s in f["teacher_of_tag"][()]]
                self.offsets = np.asarray(f["offsets"][()], dtype=np.int64)
                self.probs = np.asarray(f["probs"][()], dtype=np.float32)
                self.features = np.asarray(f["features"][()], dtype=np.float16) if "features" in f else None
                self.features_source = str(f.attrs.get("features_source", ""))
        except (OSError, KeyError, ValueError) as err:
            raise TeacherLabelsError(f"{self.path}: cannot read the teacher labels ({err})") from err

    @property
    def vocabularies(self) -> tuple[str, ...]:
        return vocabulary_names(self.teachers)

    def vocabulary(self, name: str) -> tuple[list[str], np.ndarray]:
        """The tags of a vocabulary and the matrix that maps the file's columns onto them.

        Args:
            name: A tagger's short name ("MTT", "MSD") or "both".

        Returns:
            (tags, matrix): ``probs @ matrix`` is (num_patches, len(tags)); a tag several taggers
            predict is their mean.

        Raises:
            TeacherLabelsError: For a vocabulary the file does not hold, naming those it does.
        """
        if name not in self.vocabularies:
            raise TeacherLabelsError(f"{self.path}: no vocabulary {name!r}; it holds {', '.join(self.vocabularies)}")
        columns = [j for j, t in enumerate(self.teacher_of_tag) if name == BOTH or t.split("_")[0] == name]
        tags = list(dict.fromkeys(self.tag_names[j] for j in columns))
        matrix = np.zeros((len(self.tag_names), len(tags)), dtype=np.float32)
        for j in columns:
            matrix[j, tags.index(self.tag_names[j])] = 1.0
        matrix /= matrix.sum(axis=0, keepdims=True)
        return tags, matrix

    def track_probs(self, i: int) -> np.ndarray:
        """Track ``i``'s patches: float32 (num_patches, num_columns)."""
        return self.probs[self.offsets[i]:self.offsets[i + 1]]
