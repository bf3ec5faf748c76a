"""Extract stage: song-level features from the last three layers of every pretrained SampleCNN."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

from tqdm.auto import tqdm

from msagg.data.formats import features as features_lib
from msagg.data.formats.features_writer import FeaturesWriter
from msagg.data.atomic import remove_stale_temps, write_text
from msagg.data.formats.cache import AudioCache
from msagg.data.classic import CLASSIC, TEACHER_SETS, classic_dim
from msagg.data.errors import ConfigError, MsaggError
from msagg.data.segments import SEGMENTINGS
from msagg.models import specs
from msagg.stages.runs.pretrain_run import PretrainRun
from msagg.stages import quiet, teacher
from msagg.stages.engines import ENGINES, check_engine
from msagg.stages.runs.folder import OMIT_DEFAULT, OMIT_VALUE, RUNTIME, RunFolder, lock_scope
from msagg.stages.runs.upstream import open_upstream

logger = logging.getLogger(__name__)

AUTO = "auto"
"""``classic``'s default: "mfcc", and "musicnn" too when the musicnn package is installed."""


def default_classic() -> tuple[str, ...]:
    """What ``classic=("auto",)`` stands for here: every reference set, the teacher's only when musicnn
    is installed (``msagg.stages.teacher.installed``)."""
    return tuple(c for c in CLASSIC if c not in TEACHER_SETS or teacher.installed())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """What the extract stage computes.

    Attributes:
        pretrain: A finished pretrain run folder (``<scale>/model.keras`` + ``metrics.json``).
        cache: A prepare run folder (or its ``cache/`` folder, or an older run's ``cache.h5``); it
            may be another dataset than the models were trained on (transfer).
        song_pool: How a song's segment vectors become one vector: "mean" (the paper), "max",
            "meanmax" ([mean, max] concatenated) or "meanstd" ([mean, standard deviation]).
        segments: How a song is cut into segments (``msagg.data.segments``): "cover" (default: the
            non-overlapping segments plus one ending at the song's end, so no sample is left out)
            or "drop" (the remainder after the last whole segment is left out, as every extract
            run before this setting did: their config.json, without the key, reads as "drop" and
            keeps its hash).
        scales: Scales to use (empty: every scale of the pretrain run).
        classic: Reference feature sets computed from the same audio and stored beside the learned
            ones, the baselines every report compares with (``msagg.data.classic``): "mfcc" (MFCC
            statistics) and "musicnn" (the teacher's layers; needs the musicnn package, ``make
            teacher``); empty: none. The default, ("auto",), is resolved when the config is made:
            both where musicnn is installed, else "mfcc" (config.json records which).
        engine: Where the features are computed, an entry of ``msagg.stages.engines.ENGINES``:
            "local" (this process) or "ray" (Ray actors). The file is the same either way, so the
            engine is a ``RUNTIME`` field: not in config.json nor the hash.
        address: The Ray cluster to use with engine "ray" ("HOST:6379", "ray://HOST:10001",
            "auto"); None: a Ray cluster of this machine's cores, started for the run.
            ``RUNTIME`` as well.
        precision: What the models compute in: "float32" (default) or "bf16" (Keras'
            mixed_bfloat16), whatever precision they were trained in; the stored features are
            float32 either way. Left out of config.json and the hash at "float32".
    """

    pretrain: str
    cache: str
    song_pool: str = "mean"
    segments: str = dataclasses.field(default="cover", metadata={OMIT_VALUE: "drop"})
    scales: tuple[str, ...] = ()
    classic: tuple[str, ...] = (AUTO,)
    engine: str = dataclasses.field(default="local", metadata={RUNTIME: True})
    address: str | None = dataclasses.field(default=None, metadata={RUNTIME: True})
    precision: str = dataclasses.field(default="float32", metadata={OMIT_DEFAULT: True})

    def __post_init__(self):
        for name in ("pretrain", "cache"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name} must be a run folder, got {value!r}")
        if self.song_pool not in features_lib.SONG_POOLS:
            raise ConfigError(f"song_pool must be one of {', '.join(features_lib.SONG_POOLS)}, got {self.song_pool!r}")
        if self.segments not in SEGMENTINGS:
            raise ConfigError(f"segments must be one of {', '.join(SEGMENTINGS)}, got {self.segments!r}")
        scales = (self.scales,) if isinstance(self.scales, str) else tuple(self.scales)
        try:
            normalized = tuple(specs.parse_scale(str(s)) for s in scales)
        except ValueError as err:
            raise ConfigError(f"scales: {err}") from None
        duplicates = sorted({s for s in normalized if normalized.count(s) > 1})
        if duplicates:
            raise ConfigError(f"scales lists {', '.join(duplicates)} more than once")
        object.__setattr__(self, "scales", normalized)
        classic = (self.classic,) if isinstance(self.classic, str) else tuple(self.classic)
        if classic == (AUTO,):
            classic = default_classic()
        bad = [c for c in classic if c not in CLASSIC]
        if bad or len(set(classic)) != len(classic):
            raise ConfigError(f"classic must list distinct names among {', '.join(CLASSIC)} (or be {AUTO} alone), "
                              f"got {classic!r}")
        missing = [c for c in classic if c in TEACHER_SETS and not teacher.installed()]
        if missing:
            raise ConfigError(f"classic {missing[0]} needs the teacher's weights, from the musicnn package, which is "
                              f"not installed: {teacher.INSTALL_COMMAND} (make teacher)")
        object.__setattr__(self, "classic", tuple(c for c in CLASSIC if c in classic))
        check_engine(self.engine, self.address)
        if self.precision not in specs.PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(specs.PRECISIONS)}, got {self.precision!r}")


class ExtractError(MsaggError):
    """An extraction that cannot run as asked (an empty cache, a bad batch size)."""


class ExtractionStopped(RuntimeError):
    """Raised by ``run(..., stop_after=N)`` (a test hook that simulates a kill)."""


# ---------------------------------------------------------------------------------------------
# The stage


def _write_skipped(out_dir: Path, rows: list[tuple[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["track_id", "reason"])
    writer.writerows(rows)
    write_text(out_dir / "skipped.csv", buf.getvalue())


@lock_scope
def run(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 64,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    engine_options: Mapping[str, Any] | None = None,
) -> Path:
    """Extracts song-level features of every track of a cache with every model of a pretrain run.

    Each track is read once; for each model its segments (batched with those of neighbouring
    tracks) go through one forward pass that yields the three taps, each max-pooled over time
    within a segment and then pooled over the song. Rows are flushed group by group into
    ``features.h5.partial``; a killed run resumes from the last group written. With engine "ray",
    ranges of whole groups are computed on Ray actors (``msagg.stages.engines.ray_extract``) and written here in
    cache order, group by group as above: the same file.

    Args:
        config: The stage config.
        out_dir: The run folder.
        batch_size: Segments per forward pass (does not change the results' meaning; keep it
            the same when resuming for bit-identical rows).
        overwrite: Replace a folder holding another config (or redo a finished one).
        progress: Show a progress bar.
        stop_after: Test hook: raise ``ExtractionStopped`` once at least this many tracks are
            written, as if the process had been killed.
        engine_options: With engine "ray": keyword options of ``msagg.stages.engines.ray_extract.Extractors``
            (``range_tracks``, ``num_actors``, ...).

    Returns:
        ``out_dir / "features.h5"``.

    Raises:
        RunConflictError: If ``out_dir`` holds another config and ``overwrite`` is False.
        RunFolderBusy: If another process is running a stage in ``out_dir``.
        CacheError: For a missing or unreadable cache.
        PretrainRunError: For an unfinished pretrain run, a scale it lacks, or models trained at
            another sample rate than the cache's.
        ExtractError: For an empty cache.
        UnfinishedRunError: If the cache's prepare run folder (``msagg.stages.runs.upstream.open_upstream``)
            has no DONE marker, or its DONE belongs to another run than the cache.
        CacheError: Also for audio that fails its checksum, or a shard that is missing or was
            replaced, naming the shard and the tracks.
        WriteError: When the disk refuses a write (naming the file); no DONE is written, and a
            later run resumes from the rows durably written.
        RayEngineError: With engine "ray": Ray is not installed, the cluster cannot be reached,
            or a worker kept dying (nothing is written in the first two cases).
    """
    out_dir = Path(out_dir)
    if batch_size < 1:
        raise ExtractError(f"batch_size must be at least 1, got {batch_size}")
    folder = RunFolder(out_dir, "extract", config)
    folder.lock()  # before anything reads or writes there (the partial features file above all)
    final = out_dir / features_lib.FILE_NAME
    if folder.done and not overwrite:
        logger.info("%s: extract already done with config %s; nothing to do", out_dir, folder.hash)
        return final
    prepared = open_upstream(config.cache, "prepare")
    with AudioCache(prepared.file) as cache, contextlib.ExitStack() as stack:
        prepared.check_file(cache.path, cache.config_hash)
        pretrain = PretrainRun(config.pretrain)
        scales = pretrain.select(config.scales)
        pretrain.check_sample_rate(cache.sample_rate, f"the audio cache {cache.path}", scales)
        if cache.num_tracks == 0:
            raise ExtractError(f"{cache.path}: the cache holds no tracks")
        quiet.import_backend()  # every check above runs without the backend; the models need it
        engine = ENGINES[config.engine].module("extract")
        connection = stack.enter_context(engine.connect(config))  # an engine that cannot start writes nothing
        if not folder.start(overwrite, upstream={"pretrain": pretrain.upstream, "cache": prepared}):
            return final
        remove_stale_temps(out_dir)  # temps of atomic writes a killed run left (skipped.csv, DONE)
        computer = stack.enter_context(engine.extractor(connection, config, cache, pretrain, scales, batch_size,
                                                        **(engine_options or {})))
        infos = computer.scale_infos()
        writer = FeaturesWriter(
            final,
            track_ids=list(cache.track_ids),
            labels=cache.labels,
            label_names=cache.label_names,
            split=list(cache.split),
            task=cache.task,
            dataset=cache.dataset,
            pretrain_dataset=pretrain.dataset,
            song_pool=config.song_pool,
            config_hash=folder.hash,
            scales=infos,
            classic={name: classic_dim(name) for name in config.classic},
            precision=config.precision,
            segments=config.segments,
        )
        num_tracks = cache.num_tracks
        start = writer.num_done
        if not any(c in TEACHER_SETS for c in config.classic):
            logger.info("musicnn reference features: not computed (%s)", "not asked for" if teacher.installed() else
                        f"the musicnn package is not installed: {teacher.INSTALL_COMMAND}")
        logger.info("extract %d tracks of %s (%d Hz) with scales %s in %s, segments %s, song pooling %s, "
                    "classic features %s, engine %s%s", num_tracks, cache.dataset, cache.sample_rate, ", ".join(scales),
                    config.precision, config.segments, config.song_pool, ", ".join(config.classic) or "none",
                    config.engine,
                    f"; resuming after {start}" if start else "")
        began = time.monotonic()
        with writer, tqdm(total=num_tracks, initial=start, unit="track", desc="extract", disable=not progress,
                          dynamic_ncols=True) as bar:
            for k, block, counts, classic in computer.rows(start):
                writer.write(block, counts, classic)
                bar.update(k)
                done = writer.num_done
                if stop_after is not None and stop_after <= done < num_tracks:
                    raise ExtractionStopped(f"stopped after {done} of {num_tracks} tracks (stop_after={stop_after})")
            bad = writer.nonfinite_rows()
            path = writer.finalize()
        seconds = time.monotonic() - began
        skipped = [(str(cache.track_ids[i]), "non-finite features") for i in bad]
        if skipped:
            logger.warning("%d tracks gave non-finite features; listed in %s", len(skipped), out_dir / "skipped.csv")
            _write_skipped(out_dir, skipped)
        rate = (num_tracks - start) / seconds if seconds > 0 else float("nan")
        logger.info("wrote %s: %d tracks x %d scales in %.1f s (%.1f tracks/s)", path, num_tracks, len(scales),
                    seconds, rate)
    folder.finish({"num_tracks": num_tracks, "scales": scales, "num_skipped": len(skipped),
                   "seconds": round(seconds, 1), "engine": config.engine,
                   **({config.engine: summary} if (summary := computer.summary()) else {})})
    return path
