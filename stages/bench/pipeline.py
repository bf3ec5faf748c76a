"""Scale benchmark of the input pipeline: prepare, pretrain crops and extract on N and 4N synthetic tracks.

``msagg bench-pipeline`` generates ``num_tracks`` (N) synth-tags tracks of ``track_sec`` seconds,
then 4N, and runs on each corpus the real stages, each step in a fresh process (so that its peak
resident memory is its own):

    prepare       ``msagg.stages.prepare.run`` into ``<work>/tracks-<N>/prepare`` (the sharded cache);
                  files/s and real-time factor from its DONE; the run folder's size on disk is
                  sampled while it runs, so the peak can be set against the final size
    models        once: a pretrain run folder ``<work>/pretrain`` of untrained models (every
                  scale of ``scales`` at ``width``), written as the pretrain stage writes them
    crops <scale> ``msagg.stages.training.crops.CropSequence`` batches (no model): the pretrain input pipeline,
                  segments/s at each of ``crop_scales``' input lengths
    extract       ``msagg.stages.extract.run`` with those models on the cache (and the MFCC statistics;
                  not the teacher's set, which extract adds where musicnn is installed, so that the
                  figures do not depend on it): real-time factor

Then, per step, the ratio of peak resident memory at 4N to that at N: a streaming pipeline keeps
it near 1, and a step above ``RSS_GROWTH_LIMIT`` is flagged, as is a prepare whose disk peak
exceeds ``DISK_PEAK_LIMIT`` times its final size.

Here: the settings, the work folder and the parent that runs the steps; the steps themselves in
``msagg.stages.bench.pipeline_steps``, the report (``summarize``, ``format_table``) in
``msagg.stages.bench.pipeline_report``, both importable from here.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import multiprocessing
import numbers
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from msagg.data.errors import MsaggError
from msagg.stages import quiet
from msagg.stages.bench.measure import DiskWatcher, tree_bytes
from msagg.stages.bench.pipeline_report import DISK_PEAK_LIMIT, RSS_GROWTH_LIMIT, format_table, summarize  # noqa: F401
from msagg.stages.bench.pipeline_steps import (DATASET, crops_step, extract_step, measured, models_step,  # noqa: F401
                                               prepare_config, prepare_step)
from msagg.stages.runs.records import DONE_FILE
from msagg.models.specs import PAPER_SCALES, PRECISIONS

logger = logging.getLogger(__name__)

SIZE_FACTOR = 4
"""The larger corpus holds this many times the tracks of the smaller."""
CROP_SCALES = ("3^9", "2^13")
"""Input lengths of the crops step: 59049 and 16384 samples."""
MARKER = ".msagg-bench-pipeline"
"""Marks a --work folder as this benchmark's: it may be emptied and filled again."""


class PipelineBenchError(MsaggError):
    """A pipeline benchmark that cannot run: a work folder in use by other files, too little disk."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """What ``run_benchmark`` measures.

    Attributes:
        num_tracks: N, tracks of the smaller corpus (the larger has ``SIZE_FACTOR`` x N).
        track_sec: Duration of every generated track, seconds (29: MTAT's clips).
        scales: Scales of the extract step's models (default: the paper's eight).
        width: Width multiplier of those models (1.0 = the paper's).
        crop_scales: Scales whose input lengths the crops step measures.
        crop_batch_size: Crops per batch (pretrain's batch, the paper's 23).
        min_crop_batches: The crops step times one pass over the train split's segments (a
            pretrain epoch), and at least this many batches.
        extract_batch_size: Segments per forward pass in extract (at most: see
            ``msagg.stages.engines.taps.BATCH_MEMORY_MB``).
        precision: What extract's models compute in, "float32" or "bf16".
        workers: Decoding processes of prepare (None: the usable cores).
        sample_rate: Hz.
        seed: Of the corpus, the models' weights and the crops.
    """

    num_tracks: int = 16
    track_sec: float = 29.0
    scales: tuple[str, ...] = PAPER_SCALES
    width: float = 1.0
    crop_scales: tuple[str, ...] = CROP_SCALES
    crop_batch_size: int = 23
    min_crop_batches: int = 100
    extract_batch_size: int = 64
    precision: str = "float32"
    workers: int | None = None
    sample_rate: int = 22050
    seed: int = 0

    def __post_init__(self):
        def integer(name: str, minimum: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        for name in ("num_tracks", "crop_batch_size", "min_crop_batches", "extract_batch_size"):
            integer(name, 1)
        if self.workers is not None:
            integer("workers", 1)
        for name in ("track_sec", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not self.scales:
            raise ValueError("no scales for extract: give at least one, e.g. 3^9")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not self.crop_scales:
            raise ValueError("no crop scales: give at least one, e.g. 3^9")

    @property
    def sizes(self) -> tuple[int, int]:
        """The two corpus sizes, N and ``SIZE_FACTOR`` x N."""
        return self.num_tracks, SIZE_FACTOR * self.num_tracks


def plan(settings: Settings) -> Settings:
    """Checks a request before anything is generated: the settings with scale names normalized.

    Raises:
        ValueError: For an unknown scale (``msagg.models.specs``' message).
        data.errors.ConfigError: For a corpus the prepare stage refuses (duration, rate, seed).
    """
    from msagg.models import specs

    def scales(names: Sequence[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(specs.parse_scale(name) for name in names))

    settings = dataclasses.replace(settings, scales=scales(settings.scales), crop_scales=scales(settings.crop_scales))
    for num_tracks in settings.sizes:
        prepare_config(settings, num_tracks)
    return settings


# ---------------------------------------------------------------------------------------------
# The parent: runs the steps, watches the disk, compares the two sizes.


def _start_step_process(keras: bool, verbose: bool) -> None:
    """Prepares a step's process as the CLI prepares its own: the backends' Python loggers at
    ERROR (extract's eight models would each warn about tf.function retracing) and, for the
    steps that use Keras, the backend imported with its start-up notices hidden; unless debugging."""
    quiet.quiet_backend_loggers(verbose)
    if keras:
        quiet.import_backend(verbose)


def _run_step(step: Callable[..., dict], kwargs: dict, *, isolate: bool, keras: bool, workers: bool = False) -> dict:
    if not isolate:
        return measured(step, kwargs, workers)
    # A fresh process per step, so that its peak resident memory is its own.
    context = multiprocessing.get_context("spawn")
    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_start_step_process,
                                                initargs=(keras, verbose)) as pool:
        return pool.submit(measured, step, kwargs, workers).result()


def _work_folder(work_dir: str | os.PathLike | None) -> tuple[Path, bool]:
    """The folder for the generated data, and whether this run created it."""
    if work_dir is None:
        return Path(tempfile.mkdtemp(prefix="msagg-bench-pipeline-")), True
    work = Path(work_dir)
    if work.exists() and not work.is_dir():
        raise PipelineBenchError(f"{work}: not a folder (--work takes a folder for the generated data)")
    if work.is_dir():
        entries = [p.name for p in work.iterdir()]
        if entries and MARKER not in entries:
            raise PipelineBenchError(f"{work}: the folder holds other files ({', '.join(sorted(entries)[:3])}"
                                     f"{', ...' if len(entries) > 3 else ''}); give an empty or new folder for --work")
        _empty(work)  # a previous benchmark's data: measured again from scratch
        created = False
    else:
        work.mkdir(parents=True)
        created = True
    (work / MARKER).write_text("data of msagg bench-pipeline; emptied by the next run given this folder\n")
    return work, created


def _empty(folder: Path) -> None:
    for path in folder.iterdir():
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() \
            else path.unlink(missing_ok=True)


def _clean(work: Path, created: bool) -> None:
    if created:
        shutil.rmtree(work, ignore_errors=True)
    else:
        _empty(work)


def audio_bytes(settings: Settings, num_tracks: int) -> int:
    """int16 bytes of ``num_tracks`` tracks of ``settings``: about their cache's size."""
    return int(num_tracks * settings.track_sec * settings.sample_rate * 2)


def _check_free_space(work: Path, settings: Settings, keep: bool) -> None:
    small, large = settings.sizes
    need = int(1.1 * audio_bytes(settings, large + (small if keep else 0)))
    free = shutil.disk_usage(work).free
    if free < need:
        kept = f", and {small} more kept" if keep else ""
        raise PipelineBenchError(
            f"{work}: the benchmark needs about {need / 1e9:.2f} GB free there ({large} tracks of "
            f"{settings.track_sec:g} s at {settings.sample_rate} Hz as int16{kept}), {free / 1e9:.2f} GB are; "
            "measure fewer --tracks or give --work elsewhere")


def run_benchmark(
    settings: Settings = Settings(),
    *,
    work_dir: str | os.PathLike | None = None,
    keep: bool = False,
    isolate: bool = True,
) -> dict[str, Any]:
    """Measures prepare, the pretrain crops and extract on N and 4N generated tracks.

    Args:
        settings: What to measure (checked by ``plan`` first).
        work_dir: Where the corpora, models and features go: a new or empty folder, or one a
            previous run of this benchmark left (emptied first). None: a temporary folder.
        keep: Keep the generated data (otherwise each size's folder is removed once measured, and
            the rest at the end).
        isolate: Run each step in a fresh process (False: in this one, for tests; the peak RSS
            is then this process's so far, not the step's).

    Returns:
        A JSON-ready dict: ``settings``, ``sizes`` (N, 4N), ``rows`` (one per step and size, in
        order: ``step`` ("prepare", "models", "crops 3^9", ..., "extract"), ``num_tracks``,
        ``wall_sec``, ``peak_rss_mb`` (the largest of the step's processes), ``peak_rss_step_mb``,
        ``peak_rss_workers_mb`` (prepare), and the step's figures: prepare ``files_per_sec,
        realtime_factor, cache_bytes, disk_final_bytes, disk_peak_bytes, disk_peak_ratio,
        disk_samples``; crops ``segments_per_sec, realtime_factor, input_length, num_batches``;
        extract ``tracks_per_sec, realtime_factor, audio_sec, stage_sec``), ``rss_growth`` (per
        step: ``small_mb, large_mb, ratio, grows``), ``disk_ok``, ``flags`` (one line per
        figure past its limit), ``limits``, ``environment``, ``isolated``, ``work_dir`` (when
        kept), ``seconds``.

    Raises:
        ValueError: For bad settings (``plan``).
        PipelineBenchError: For a ``work_dir`` holding other files, or too little free disk.
        MsaggError: As the stages raise it.
    """
    settings = plan(settings)
    started = time.perf_counter()
    work, created = _work_folder(work_dir)
    rows: list[dict] = []
    environment: dict = {}
    try:
        _check_free_space(work, settings, keep)
        pretrain_dir = work / "pretrain"
        for num_tracks in settings.sizes:
            size_dir = work / f"tracks-{num_tracks}"
            prep_dir, cache_dir = size_dir / "prepare", size_dir / "prepare" / "cache"
            logger.info("prepare: %d tracks of %g s", num_tracks, settings.track_sec)
            prep_dir.mkdir(parents=True)
            with DiskWatcher(prep_dir) as watcher:
                row = _run_step(prepare_step, dict(settings=settings, num_tracks=num_tracks, out_dir=str(prep_dir)),
                                isolate=isolate, keras=False, workers=True)
            final = tree_bytes(prep_dir)
            peak = max(watcher.peak, final)
            rows.append({"step": "prepare", "num_tracks": num_tracks, **row, "disk_final_bytes": final,
                         "disk_peak_bytes": peak, "disk_peak_ratio": round(peak / final, 4) if final else None,
                         "disk_samples": watcher.samples})
            if not (pretrain_dir / DONE_FILE).is_file():
                logger.info("models: %s at width %g, untrained", ", ".join(settings.scales), settings.width)
                row = _run_step(models_step, dict(settings=settings, out_dir=str(pretrain_dir),
                                                  cache_dir=str(cache_dir)), isolate=isolate, keras=True)
                environment = row.pop("environment")
                rows.append({"step": "models", "num_tracks": None, **row})
            for scale in settings.crop_scales:
                logger.info("crops %s: %d tracks", scale, num_tracks)
                row = _run_step(crops_step, dict(settings=settings, cache_dir=str(cache_dir), scale=scale),
                                isolate=isolate, keras=True)
                rows.append({"step": f"crops {scale}", "num_tracks": num_tracks, **row})
            logger.info("extract: %d tracks, %d scales", num_tracks, len(settings.scales))
            row = _run_step(extract_step, dict(settings=settings, pretrain_dir=str(pretrain_dir),
                                               cache_dir=str(cache_dir), out_dir=str(size_dir / "extract")),
                            isolate=isolate, keras=True)
            rows.append({"step": "extract", "num_tracks": num_tracks, **row})
            if not keep:
                shutil.rmtree(size_dir)  # the larger corpus need not share the disk with the smaller
    finally:
        if not keep:
            _clean(work, created)
    return summarize(settings, rows, environment=environment, isolated=isolate,
                     work_dir=str(work) if keep else None, seconds=time.perf_counter() - started)


