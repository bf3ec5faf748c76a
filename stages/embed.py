"""``msagg embed``: the song vectors of a collection of audio files, in one HDF5 or .npz file; a killed run resumes.

Each song is computed by ``msagg.stages.family.Family.embed_file`` and written at once, atomically,
as a small part file in ``<out>.parts/`` (beside the output, with the settings it was made with);
a file that cannot be read is recorded there with its reason. A run that is stopped, however it
stops, leaves the songs it finished; the same command again skips them, and a run with other
settings (models, pooling, segments, frames) starts the parts afresh. Once every file has its part,
``msagg.data.formats.embeddings.assemble`` joins them into ``<out>`` in one pass (written under a
temporary name, then renamed) and the parts folder is removed. Rows follow the order of the files
(``msagg.data.collection.audio_files``), so a resumed run writes the file an uninterrupted one writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

from msagg.data.atomic import remove_stale_temps, write_json
from msagg.data.audio import AudioError
from msagg.data.collection import audio_files
from msagg.data.errors import MsaggError
from msagg.data.formats import embeddings
from msagg.data.formats.features import SONG_POOLS
from msagg.data.names import escape_name
from msagg.data.segments import SEGMENTINGS
from msagg.stages.family import DEFAULT_FAMILY, Family
from msagg.stages.runs.lock import FolderLock

logger = logging.getLogger(__name__)

PARTS_SUFFIX = ".parts"
SETTINGS_FILE = "settings.json"


class EmbedError(MsaggError):
    """An output that cannot be written as asked (it exists, or is a folder)."""


@dataclasses.dataclass(frozen=True)
class Summary:
    """What ``run`` did.

    Attributes:
        out: The embeddings file.
        num_songs: Songs in it.
        skipped: ``(path, reason)`` of every file that could not be read, in order.
        num_resumed: Files a stopped run had finished (not computed again).
    """

    out: Path
    num_songs: int
    skipped: list[tuple[str, str]]
    num_resumed: int


def parts_folder(out: str | os.PathLike) -> Path:
    """Where the songs of an unfinished run are kept: ``<out>.parts`` beside the output."""
    out = Path(out)
    return out.with_name(out.name + PARTS_SUFFIX)


def part_file(parts: Path, path: str) -> Path:
    """A song's part: named by a hash of its absolute path (any file name, any length)."""
    key = hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:32]
    return parts / f"{key}.npz"


def run(paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, pretrain: str | os.PathLike = DEFAULT_FAMILY,
        frames: bool = False, song_pool: str = "mean", segments: str = "cover", scales: Sequence[str] = (),
        precision: str = "float32", fmt: str | None = None, batch_size: int = 64, overwrite: bool = False,
        progress: bool = True, on_song: Callable[[str], None] | None = None) -> Summary:
    """Embeds every audio file of ``paths`` into one file.

    Args:
        paths: Audio files and folders (searched recursively).
        out: The embeddings file (layout: ``msagg.data.formats.embeddings``).
        pretrain: A finished pretrain run folder, or the name of a shipped family ("general").
        frames: Also store every segment's vectors and start times.
        song_pool, segments, scales, precision, batch_size: As ``Family`` and ``Family.embed``.
        fmt: "h5" or "npz" (default: "npz" for an ``out`` ending in ``.npz``, else "h5").
        overwrite: Replace an existing ``out``.
        progress: Show a progress bar.
        on_song: Called with each file's path once its part is written (tests stop a run with it).

    Returns:
        A ``Summary``.

    Raises:
        EmbedError: If ``out`` exists (without ``overwrite``) or is a folder.
        CollectionError: For a folder holding no audio files.
        PretrainRunError: For a ``pretrain`` that is no finished pretrain run.
        RunFolderBusy: If another run is writing the same ``out``.
    """
    if song_pool not in SONG_POOLS:
        raise ValueError(f"song_pool must be one of {', '.join(SONG_POOLS)}, got {song_pool!r}")
    if segments not in SEGMENTINGS:
        raise ValueError(f"segments must be one of {', '.join(SEGMENTINGS)}, got {segments!r}")
    out = Path(out)
    fmt = embeddings.format_of(out, fmt)
    if out.is_dir():
        raise EmbedError(f"{escape_name(str(out))}: is a folder, not a file (--out names the file to write)")
    if out.exists() and not overwrite:
        raise EmbedError(f"{escape_name(str(out))}: exists; give --overwrite to replace it")
    files = audio_files(paths)
    family = Family(pretrain, scales=scales, precision=precision, batch_size=batch_size)
    settings = {
        "pretrain": str(family.run.path), "models": {s: family.run.model_hash(s) for s in family.scales},
        "song_pool": song_pool, "segments": segments, "precision": precision, "frames": bool(frames),
    }
    parts = parts_folder(out)
    with FolderLock(parts):
        remove_stale_temps(parts)
        _start_parts(parts, settings)
        todo = [f for f in files if not part_file(parts, f).exists()]
        num_resumed = len(files) - len(todo)
        if num_resumed:
            logger.info("%s: %d of %d files done by an earlier run; embedding the other %d", parts, num_resumed,
                        len(files), len(todo))
        _embed_files(family, todo, parts, len(files), dict(frames=frames, song_pool=song_pool, segments=segments),
                     progress, on_song)
        attrs = {"pretrain": str(family.run.path), "sample_rate": family.sample_rate, "song_pool": song_pool,
                 "segments": segments, "precision": precision, "input_lengths": json.dumps(family.input_lengths)}
        skipped = embeddings.assemble(out, fmt, [part_file(parts, f) for f in files], attrs,
                                      family.dims(song_pool), family.channels(), frames, parts)
        for entry in os.scandir(parts):
            if entry.name != ".lock":
                os.unlink(entry.path)
    shutil.rmtree(parts, ignore_errors=True)
    return Summary(out, len(files) - len(skipped), skipped, num_resumed)


def _start_parts(parts: Path, settings: dict) -> None:
    """Keeps the parts of an earlier run with the same settings; removes those of another."""
    path = parts / SETTINGS_FILE
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = None
    if earlier != settings:
        stale = list(parts.glob("*.npz"))
        if stale:
            logger.info("%s: made with other settings; starting again (%d songs removed)", parts, len(stale))
        for p in stale:
            p.unlink()
        write_json(path, settings)


def _embed_files(family: Family, files: Sequence[str], parts: Path, total: int, options: dict, progress: bool,
                 on_song: Callable[[str], None] | None) -> None:
    """Writes the part of each file (its vectors, or the reason it was skipped)."""
    from tqdm.auto import tqdm

    with tqdm(total=total, initial=total - len(files), desc="embed", unit="file", disable=None if progress else True,
              dynamic_ncols=True) as bar:
        for path in files:
            try:
                song = family.embed_file(path, **options)
            except AudioError as err:
                logger.warning("%s: skipped: %s", escape_name(path), err.reason)
                embeddings.write_part(part_file(parts, path), path, reason=err.reason)
            else:
                arrays = embeddings.part_arrays(song.vectors, song.num_segments, song.frames, song.times)
                embeddings.write_part(part_file(parts, path), path, arrays)
            bar.update(1)
            if on_song is not None:
                on_song(path)
