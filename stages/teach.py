"""Teach stage: a real-music tagger labels every track of an audio cache, for pretraining on soft targets.

``msagg teach --cache <prepare run> --out <run>`` runs musicnn's taggers (``msagg.stages.teacher``:
the MTT and MSD models of the installed musicnn wheel) over every track once and writes their tag
probabilities per 3-s patch to ``labels.h5`` (``msagg.data.formats.teacher_labels``). Pretrain
then trains on them (``--teacher-labels <this run>``): a crop's target is the teacher's answer for
the time it covers, or the track's mean answer. An unlabelled collection (``--dataset unlabelled``)
becomes tagged pretraining data this way.

The tracks are labelled in blocks of ``BLOCK_TRACKS``, each written to ``parts/`` atomically, so a
killed run resumes from the blocks it finished and ends with the same file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from msagg.data import melspec
from msagg.data.atomic import atomic_write, remove_stale_temps
from msagg.data.errors import ConfigError
from msagg.data.formats.cache import AudioCache
from msagg.data.formats.teacher_labels import FILE_NAME, write_labels
from msagg.stages import quiet
from msagg.stages.runs.folder import OMIT_DEFAULT, RunFolder, lock_scope
from msagg.stages.runs.upstream import open_upstream
from msagg.stages.teacher import SONG_KEYS, TEACHERS, musicnn_package

__all__ = ["Config", "run", "BLOCK_TRACKS", "PATCH_SECONDS"]

logger = logging.getLogger(__name__)

BLOCK_TRACKS = 16
"""Tracks per part file: the unit a killed run resumes from."""
PATCH_SECONDS = melspec.PATCH_FRAMES * melspec.HOP_LENGTH / melspec.SAMPLE_RATE
"""2.992 s: where musicnn's patches start and how long they are (187 frames of 256 samples at 16 kHz)."""
PARTS_DIR = "parts"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """What the teach stage computes.

    Attributes:
        cache: A prepare run folder (or its ``cache/`` folder).
        teachers: musicnn taggers to run (``msagg.stages.teacher.TEACHERS``): their tags stand side
            by side in labels.h5, and pretrain picks a vocabulary (each, or both together).
        float16_log: Take the front end's logarithm in float16 as musicnn's extractor does (its
            overflow gives loud patches one constant answer); default False.
        features: Also store the first tagger's own view of every patch: its back end's mean and max
            pools (1,506 numbers for musicnn, the layer the ``musicnn`` reference set averages), which
            pretrain can fit besides the tags (``--set teacher_features=W``). Left out of config.json
            and the hash when false.
    """

    cache: str
    teachers: tuple[str, ...] = TEACHERS
    float16_log: bool = False
    features: bool = dataclasses.field(default=False, metadata={OMIT_DEFAULT: True})

    def __post_init__(self):
        if isinstance(self.cache, os.PathLike):
            object.__setattr__(self, "cache", os.fspath(self.cache))
        if not isinstance(self.cache, str) or not self.cache:
            raise ConfigError(f"cache must be a prepare run folder, got {self.cache!r}")
        teachers = (self.teachers,) if isinstance(self.teachers, str) else tuple(self.teachers)
        unknown = [t for t in teachers if t not in TEACHERS]
        if not teachers or unknown:
            raise ConfigError(f"teachers must name one or more of {', '.join(TEACHERS)}, got {list(teachers)!r}")
        if len(set(teachers)) != len(teachers):
            raise ConfigError(f"teachers lists a tagger more than once: {list(teachers)!r}")
        object.__setattr__(self, "teachers", teachers)
        if not isinstance(self.float16_log, bool):
            raise ConfigError(f"float16_log must be true or false, got {self.float16_log!r}")
        if not isinstance(self.features, bool):
            raise ConfigError(f"features must be true or false, got {self.features!r}")


@lock_scope
def run(config: Config, out_dir: str | os.PathLike, *, overwrite: bool = False, progress: bool = True) -> Path:
    """Labels every track of ``config.cache`` with the teachers' tag probabilities per patch.

    Returns:
        ``out_dir`` (holding labels.h5).

    Raises:
        TeacherError: If musicnn is not installed (the message says how to install it), before
            anything is written.
        RunConflictError, RunFolderBusy, CacheError: As the other stages.
    """
    out_dir = Path(out_dir)
    folder = RunFolder(out_dir, "teach", config).lock()
    if folder.done and not overwrite:
        logger.info("%s: teach already done with config %s; nothing to do", out_dir, folder.hash)
        return out_dir
    prepared = open_upstream(config.cache, "prepare")
    package = musicnn_package()  # refuses at once, naming the install command, where musicnn is missing
    if not folder.start(overwrite, upstream={"cache": prepared}):
        return out_dir
    remove_stale_temps(out_dir)
    quiet.import_backend()
    from msagg.stages.teacher import load_teacher

    teachers = [load_teacher(name, float16_log=config.float16_log, package=package) for name in config.teachers]
    parts = out_dir / PARTS_DIR
    parts.mkdir(exist_ok=True)
    with AudioCache(prepared.file) as cache:
        prepared.check_file(cache.path, cache.config_hash)
        num = cache.num_tracks
        blocks = range(0, num, BLOCK_TRACKS)
        bar = tqdm(total=num, unit="track", desc="teach", disable=not progress)
        for start in blocks:
            stop = min(start + BLOCK_TRACKS, num)
            part = parts / f"part-{start // BLOCK_TRACKS:05d}.npz"
            if not part.is_file():
                arrays = {}
                for i in range(start, stop):
                    patches = teachers[0].patches(cache.track(i), cache.sample_rate)
                    if config.features:
                        first = teachers[0].patch_features(patches, ("taggram",) + SONG_KEYS)
                        probs = [first["taggram"]] + [t.tag_patches(patches) for t in teachers[1:]]
                        arrays[f"f{i - start}"] = np.concatenate([first[k] for k in SONG_KEYS], axis=1).astype(np.float16)
                    else:
                        probs = [t.tag_patches(patches) for t in teachers]
                    arrays[f"t{i - start}"] = np.concatenate(probs, axis=1)
                with atomic_write(part) as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)
            bar.update(stop - start)
        bar.close()
        per_track, per_track_features = [], []
        for start in blocks:
            with np.load(parts / f"part-{start // BLOCK_TRACKS:05d}.npz") as z:
                count = min(BLOCK_TRACKS, num - start)
                per_track += [z[f"t{k}"] for k in range(count)]
                if config.features:
                    per_track_features += [z[f"f{k}"] for k in range(count)]
        write_labels(out_dir / FILE_NAME, teachers=config.teachers,
                     tag_names=[tag for t in teachers for tag in t.tags],
                     teacher_of_tag=[t.name for t in teachers for _ in t.tags], track_ids=list(cache.track_ids),
                     per_track=per_track, patch_seconds=PATCH_SECONDS, hop_seconds=PATCH_SECONDS,
                     cache_config_hash=cache.config_hash,
                     per_track_features=per_track_features if config.features else None,
                     features_source=f"{config.teachers[0]} {'+'.join(SONG_KEYS)}" if config.features else "")
    shutil.rmtree(parts, ignore_errors=True)
    patches = int(sum(len(p) for p in per_track))
    logger.info("teach: %d tracks, %d patches of %.2f s, %d tags (%s) in %s", num, patches, PATCH_SECONDS,
                per_track[0].shape[1] if per_track else 0, ", ".join(config.teachers), out_dir / FILE_NAME)
    folder.finish({"tracks": num, "patches": patches, "teachers": list(config.teachers)})
    return out_dir
