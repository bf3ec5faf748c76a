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
    extract       ``msagg.stages.extract.run`` with those models on the cache (and its default classic
                  features, MFCC statistics): real-time factor

Then, per step, the ratio of peak resident memory at 4N to that at N: a streaming pipeline keeps
it near 1, and a step above ``RSS_GROWTH_LIMIT`` is flagged, as is a prepare whose disk peak
exceeds ``DISK_PEAK_LIMIT`` times its final size.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import multiprocessing
import numbers
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from msagg.data.errors import MsaggError
from msagg.stages import quiet
from msagg.models.specs import PAPER_SCALES
from msagg.stages.bench.measure import DiskWatcher, lay_out, own_peak_rss_mb, rusage_mb, sig, tree_bytes

logger = logging.getLogger(__name__)

SIZE_FACTOR = 4
"""The larger corpus holds this many times the tracks of the smaller."""
CROP_SCALES = ("3^9", "2^13")
"""Input lengths of the crops step: 59049 and 16384 samples."""
RSS_GROWTH_LIMIT = 1.2
"""A step whose peak RSS at 4N exceeds this multiple of that at N is flagged."""
DISK_PEAK_LIMIT = 1.05
"""A prepare whose disk use peaked above this multiple of its final size is flagged."""
MARKER = ".msagg-bench-pipeline"
"""Marks a --work folder as this benchmark's: it may be emptied and filled again."""
DATASET = "synth-tags"


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
        extract_batch_size: Segments per forward pass in extract.
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
        _prepare_config(settings, num_tracks)
    return settings


def _prepare_config(settings: Settings, num_tracks: int):
    from msagg.stages import prepare

    return prepare.Config(dataset=DATASET, num_tracks=num_tracks, min_sec=float(settings.track_sec),
                          max_sec=float(settings.track_sec), seed=settings.seed, sample_rate=settings.sample_rate)


# ---------------------------------------------------------------------------------------------
# Measurements: each step runs in its own process; these functions run there.


def _measured(step: Callable[..., dict], kwargs: dict, workers: bool = False) -> dict:
    """Runs one step and adds its wall time and its processes' peak resident memory."""
    began = time.perf_counter()
    result = step(**kwargs)
    result["wall_sec"] = round(time.perf_counter() - began, 3)
    result["peak_rss_step_mb"] = own_peak_rss_mb()
    result["peak_rss_mb"] = result["peak_rss_step_mb"]
    if workers:
        # The largest of the processes the step started and waited for (prepare's decoding
        # workers): their ru_maxrss, which may include the step's RSS when each started, a
        # figure below the step's own peak, so the maximum of the two stays right.
        result["peak_rss_workers_mb"] = rusage_mb(resource.RUSAGE_CHILDREN)
        result["peak_rss_mb"] = max(result["peak_rss_mb"], result["peak_rss_workers_mb"])
    return result


def prepare_step(settings: Settings, num_tracks: int, out_dir: str) -> dict:
    """Prepares ``num_tracks`` generated tracks into ``out_dir``; figures from the run's DONE."""
    from msagg.data.integrity import require_done
    from msagg.stages import prepare

    prepare.run(_prepare_config(settings, num_tracks), out_dir, workers=settings.workers, overwrite=True,
                progress=False)
    done = require_done(out_dir, "prepare")
    return {
        "num_cached": done["num_tracks"],
        "audio_sec": round(done["num_tracks"] * settings.track_sec, 3),
        "files_per_sec": done.get("files_per_sec"),
        "realtime_factor": done.get("realtime_factor"),
        "decode_workers": done.get("workers"),
        "num_shards": done.get("num_shards"),
        "cache_bytes": done.get("cache_bytes"),
        "stage_sec": done.get("seconds"),
    }


def models_step(settings: Settings, out_dir: str, cache_dir: str) -> dict:
    """A finished pretrain run folder of untrained models, written as ``msagg.stages.pretrain`` writes one.

    The models take the cache's labels, task and rate, so extract accepts them for that cache.
    """
    import keras

    from msagg.data.formats.cache import AudioCache
    from msagg.models import sample_cnn, specs
    from msagg.stages.bench import models as bench
    from msagg.stages import pretrain
    from msagg.stages.runs.pretrain_run import MODEL_FILE, mark_scale_done, save_model, scale_dir, write_scale_metrics
    from msagg.stages.runs.folder import RunFolder

    with AudioCache(cache_dir) as cache:
        task, label_names, rate = cache.task, list(cache.label_names), int(cache.sample_rate)
    config = pretrain.Config(cache=str(cache_dir), scales=settings.scales, width=settings.width)
    folder = RunFolder(out_dir, "pretrain", config, upstream={"cache": cache_dir})
    folder.start(overwrite=True)
    keras.utils.set_random_seed(settings.seed)
    num_params = {}
    for scale in settings.scales:
        model = sample_cnn.build_sample_cnn(scale, len(label_names), task, width=settings.width)
        where = scale_dir(out_dir, scale)
        save_model(where / MODEL_FILE, model)
        num_params[scale] = int(model.count_params())
        write_scale_metrics(where, {
            "scale": scale, "input_length": specs.get_spec(scale).input_length, "sample_rate": rate,
            "task": task, "label_names": label_names, "width": settings.width, "block": config.block,
            "multi": config.multi, "num_params": num_params[scale], "test": {}, "untrained": True,
        })
        mark_scale_done(where, {"scale": scale, "untrained": True})
    folder.finish({"scales": list(settings.scales), "untrained": True})
    return {"scales": list(settings.scales), "width": settings.width, "num_params": num_params,
            "environment": bench.environment()}


def crops_step(settings: Settings, cache_dir: str, scale: str) -> dict:
    """Times ``CropSequence`` batches of a cache at ``scale``'s input length (no model)."""
    from msagg.data.formats.cache import AudioCache
    from msagg.models import specs
    from msagg.stages.training.crops import CropSequence, steps_per_pass

    length = specs.get_spec(scale).input_length
    with AudioCache(cache_dir) as cache:
        rows = cache.indices("train")
        if rows.size == 0:  # a corpus too small for a train split: crop every track
            rows = np.arange(cache.num_tracks, dtype=np.int64)
        batch_size = settings.crop_batch_size
        steps = max(steps_per_pass(np.asarray(cache.lengths)[rows], length, batch_size), settings.min_crop_batches)
        sequence = CropSequence(cache, rows, length, batch_size, steps, seed=settings.seed)
        began = time.perf_counter()
        for index in range(steps):
            sequence[index]  # noqa: B018 - the batch (read, cropped, stacked) is what is timed
        seconds = time.perf_counter() - began
    rate = steps * batch_size / seconds
    return {
        "scale": scale, "input_length": length, "batch_size": batch_size, "num_batches": steps,
        "num_crop_tracks": int(rows.size), "segments_per_sec": sig(rate),
        "realtime_factor": sig(rate * length / settings.sample_rate), "stage_sec": round(seconds, 3),
    }


def extract_step(settings: Settings, pretrain_dir: str, cache_dir: str, out_dir: str) -> dict:
    """Runs the extract stage with every model of ``pretrain_dir`` on the cache."""
    from msagg.data.formats.cache import AudioCache
    from msagg.data.integrity import require_done
    from msagg.stages import extract

    with AudioCache(cache_dir) as cache:
        audio_sec = cache.total_samples / cache.sample_rate
    config = extract.Config(pretrain=str(pretrain_dir), cache=str(cache_dir))
    extract.run(config, out_dir, batch_size=settings.extract_batch_size, overwrite=True, progress=False)
    done = require_done(out_dir, "extract")
    seconds = float(done["seconds"])
    return {
        "num_extracted": done["num_tracks"], "scales": done["scales"], "classic": list(config.classic),
        "audio_sec": round(audio_sec, 3), "stage_sec": seconds,
        "tracks_per_sec": sig(done["num_tracks"] / seconds) if seconds > 0 else None,
        "realtime_factor": sig(audio_sec / seconds) if seconds > 0 else None,
    }


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
        return _measured(step, kwargs, workers)
    # A fresh process per step, so that its peak resident memory is its own.
    context = multiprocessing.get_context("spawn")
    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_start_step_process,
                                                initargs=(keras, verbose)) as pool:
        return pool.submit(_measured, step, kwargs, workers).result()


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
            if not (pretrain_dir / "DONE").is_file():
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


def summarize(settings: Settings, rows: Sequence[dict], *, environment: dict, isolated: bool,
              work_dir: str | None, seconds: float) -> dict[str, Any]:
    """The report of ``run_benchmark`` from its rows: memory growth per step and the disk check."""
    small, large = settings.sizes
    growth = []
    flags = []
    for step in dict.fromkeys(r["step"] for r in rows if r["num_tracks"] is not None):
        by_size = {r["num_tracks"]: r["peak_rss_mb"] for r in rows if r["step"] == step}
        if small not in by_size or large not in by_size:
            continue
        ratio = round(by_size[large] / by_size[small], 3) if by_size[small] else None
        grows = ratio is not None and ratio > RSS_GROWTH_LIMIT
        growth.append({"step": step, "small_mb": by_size[small], "large_mb": by_size[large], "ratio": ratio,
                       "grows": grows})
        if grows:
            flags.append(f"{step}: peak RSS grows {ratio:.2f}x from {small} to {large} tracks "
                         f"(limit {RSS_GROWTH_LIMIT:.2f})")
    for row in rows:
        ratio = row.get("disk_peak_ratio")
        if ratio is not None and ratio > DISK_PEAK_LIMIT:
            flags.append(f"prepare of {row['num_tracks']} tracks: disk peaked at {ratio:.3f}x the final size "
                         f"(limit {DISK_PEAK_LIMIT:.2f})")
    for flag in flags:
        logger.warning("%s", flag)
    return {
        "settings": dataclasses.asdict(settings),
        "sizes": [small, large],
        "rows": list(rows),
        "rss_growth": growth,
        "disk_ok": all(r.get("disk_peak_ratio") is None or r["disk_peak_ratio"] <= DISK_PEAK_LIMIT for r in rows),
        "flags": flags,
        "limits": {"rss_growth": RSS_GROWTH_LIMIT, "disk_peak_ratio": DISK_PEAK_LIMIT},
        "environment": environment,
        "isolated": isolated,
        "work_dir": work_dir,
        "seconds": round(seconds, 1),
    }


def _figure(value: float | None) -> str:
    """A rate with three significant digits at most, never in exponent form: 0.0771, 15.2, 1,234."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) >= 0.001 else f"{value:.1e}"


def _rate_text(row: dict) -> str:
    for key, unit in (("files_per_sec", "files/s"), ("tracks_per_sec", "tracks/s"), ("segments_per_sec", "seg/s")):
        if row.get(key) is not None:
            return f"{_figure(row[key])} {unit}"
    return "-"


def _number(value: Any, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of a ``run_benchmark`` report: a row per step and size, then the memory
    ratios of the two sizes per step, then the flags."""
    s = report["settings"]
    env = report.get("environment") or {}
    rows = report["rows"]
    workers = next((r.get("decode_workers") for r in rows if r["step"] == "prepare"), None)
    plural = "" if workers == 1 else "s"
    head = (f"backend {env.get('backend', '?')} on {env.get('device', '?')}; {DATASET}, {s['track_sec']:g} s "
            f"tracks at {s['sample_rate']} Hz, {workers} decoding worker{plural}; crops batch {s['crop_batch_size']}; "
            f"extract {len(s['scales'])} scales at width {s['width']:g}, batch {s['extract_batch_size']}; "
            "RTF = audio seconds per wall second")
    columns = ("tracks", "step", "rate", "RTF", "wall s", "peak RSS MB", "cache MB", "peak disk MB", "peak/final")
    cells = [list(columns)]
    for r in rows:
        cells.append([
            _number(r.get("num_tracks"), "{:d}"), r["step"], _rate_text(r), _figure(r.get("realtime_factor")),
            _number(r.get("wall_sec"), "{:.1f}"), _number(r.get("peak_rss_mb"), "{:.0f}"),
            _number(r.get("cache_bytes") and r["cache_bytes"] / 1e6, "{:.1f}"),
            _number(r.get("disk_peak_bytes") and r["disk_peak_bytes"] / 1e6, "{:.1f}"),
            _number(r.get("disk_peak_ratio"), "{:.3f}"),
        ])
    text = [False, True, False, False, False, False, False, False, False]  # labels left, numbers right
    lines = lay_out(cells, text)
    small, large = report["sizes"]
    growth_cells = [["step", f"peak RSS MB at {small}", f"at {large}", "ratio", ""]]
    for g in report["rss_growth"]:
        verdict = f"GROWS (> {RSS_GROWTH_LIMIT:.2f})" if g["grows"] else "ok"
        growth_cells.append([g["step"], _number(g["small_mb"], "{:.0f}"), _number(g["large_mb"], "{:.0f}"),
                             _number(g["ratio"], "{:.3f}"), verdict])
    out = [head, *lines, "", *lay_out(growth_cells, [True, False, False, False, True])]
    out.append(f"disk: peak / final size of each prepare run folder {'within' if report['disk_ok'] else 'ABOVE'} "
               f"{DISK_PEAK_LIMIT:.2f}; peak RSS = the largest of a step's processes")
    out.extend(f"FLAG: {flag}" for flag in report["flags"])
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    if versions:
        out.append(versions)
    return "\n".join(out)
