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
from typing import Any, Callable, Iterator, Mapping, Sequence

import keras
import numpy as np
from tqdm.auto import tqdm

from msagg.data.formats import features as features_lib
from msagg.data.formats.features_writer import FeaturesWriter, ScaleInfo
from msagg.data.atomic import remove_stale_temps, write_text
from msagg.data.formats.cache import AudioCache
from msagg.data.classic import CLASSIC, classic_dim, classic_features
from msagg.data.errors import ConfigError, MsaggError
from msagg.data.segments import SEGMENTINGS, segment, track_groups
from msagg.models import sample_cnn, specs
from msagg.stages.runs.pretrain_run import PretrainRun
from msagg.stages.engines.ray_session import check_engine
from msagg.stages.runs.folder import OMIT_DEFAULT, OMIT_VALUE, RUNTIME, RunFolder, lock_scope
from msagg.stages.runs.upstream import open_upstream

logger = logging.getLogger(__name__)


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
        classic: Classic hand-crafted feature sets computed from the same audio and stored beside
            the learned ones (``msagg.data.classic``: "mfcc"), the baseline every report compares
            with; empty: none.
        engine: Where the features are computed: "local" (this process) or "ray" (Ray actors,
            ``msagg.stages.engines.ray_extract``). The file is the same either way, so the engine is a
            ``RUNTIME`` field: not in config.json nor the hash.
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
    classic: tuple[str, ...] = CLASSIC
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
        bad = [c for c in classic if c not in CLASSIC]
        if bad or len(set(classic)) != len(classic):
            raise ConfigError(f"classic must list distinct names among {', '.join(CLASSIC)}, got {classic!r}")
        object.__setattr__(self, "classic", classic)
        check_engine(self.engine, self.address)
        if self.precision not in specs.PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(specs.PRECISIONS)}, got {self.precision!r}")


class ExtractError(MsaggError):
    """An extraction that cannot run as asked (an empty cache, a bad batch size)."""


class ExtractionStopped(RuntimeError):
    """Raised by ``run(..., stop_after=N)`` (a test hook that simulates a kill)."""


# ---------------------------------------------------------------------------------------------
# Models


@dataclasses.dataclass
class TapModel:
    """A loaded SampleCNN of one scale, wrapped to return its three taps.

    Attributes:
        scale: Scale key.
        input_length: Samples per segment.
        sample_rate: Hz the model was trained at.
        extractor: Model mapping (batch, input_length) to ``{"-3", "-2", "-1"}`` activations.
        channels: Tap -> channels.
        model_hash: sha256 of ``model.keras``.
        num_params: Parameters of the full model.
        test_metrics: The end-to-end model's song-level test metrics from ``metrics.json``.
        block, multi: The model variant (from the pretrain run's config).
        tap_layers: Tap -> name of the layer it reads.
    """

    scale: str
    input_length: int
    sample_rate: int
    extractor: keras.Model
    channels: dict[str, int]
    model_hash: str
    num_params: int
    test_metrics: dict
    block: str = "basic"
    multi: bool = False
    tap_layers: dict[str, str] = dataclasses.field(default_factory=dict)


def load_tap_models(pretrain: str | os.PathLike | PretrainRun, scales: Sequence[str] = (),
                    sample_rate: int | None = None, what: str = "the audio", *,
                    precision: str = "float32") -> dict[str, TapModel]:
    """Loads each model of a pretrain run once and wraps it to return its taps.

    Args:
        pretrain: A finished pretrain run (its folder, or a ``PretrainRun``).
        scales: Scales to load (empty: all).
        sample_rate: When given, models trained at another rate are refused.
        what: How to name the audio in that error message.
        precision: What the models compute in, "float32" or "bf16" (``specs.PRECISIONS``),
            whatever they were trained in (``sample_cnn.with_dtype``); taps are pooled to float32.

    Returns:
        Scale -> ``TapModel``, ordered by (m, n).

    Raises:
        PretrainRunError: For an unfinished run, a missing scale or file, or a sample-rate mismatch.
    """
    run = pretrain if isinstance(pretrain, PretrainRun) else PretrainRun(pretrain)
    scales = run.select(scales)
    if sample_rate is not None:
        run.check_sample_rate(sample_rate, what, scales)
    out = {}
    dtype = specs.dtype_policy(precision)
    for scale in scales:
        model = run.load(scale)
        # A run pretrained in bf16 saves models that compute in bf16: each runs as asked here.
        model = sample_cnn.with_dtype(model, dtype)
        extractor = run.tap_extractor(scale, model)
        channels = {tap: int(t.shape[-1]) for tap, t in extractor.output.items()}
        info = run.metrics(scale)
        out[scale] = TapModel(
            scale=scale,
            input_length=run.input_length(scale),
            sample_rate=int(info["sample_rate"]),
            extractor=extractor,
            channels={tap: channels[tap] for tap in specs.TAPS},
            model_hash=run.model_hash(scale),
            num_params=int(model.count_params()),
            test_metrics=dict(info.get("test") or {}),
            block=run.block,
            multi=run.multi,
            tap_layers=run.tap_layers(scale),
        )
        logger.info("loaded %s: input %d samples, %d parameters", run.model_path(scale), out[scale].input_length,
                    out[scale].num_params)
    return out


def fixed_batches(run: Callable[[np.ndarray], Any], rows: np.ndarray, batch_size: int) -> Iterator[tuple[int, Any]]:
    """Passes ``rows`` through ``run`` (e.g. ``model.predict_on_batch``) in batches of one fixed shape.

    Every batch holds ``batch_size`` rows (the last zero-padded), so the compiled function sees
    one shape and a row's numbers do not depend on where a batch started.

    Args:
        run: A model's ``predict_on_batch``.
        rows: float32 (n, ...) inputs.
        batch_size: Rows per forward pass.

    Yields:
        ``(k, outputs)``: the first ``k`` rows of the outputs belong to the next ``k`` inputs.
    """
    buf = np.zeros((batch_size, *rows.shape[1:]), dtype=np.float32)
    for lo in range(0, rows.shape[0], batch_size):
        part = rows[lo : lo + batch_size]
        buf[: len(part)] = part
        buf[len(part) :] = 0.0
        yield len(part), run(buf)


# ---------------------------------------------------------------------------------------------
# Feature computation


def _segment_vectors(model: TapModel, segments: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Per-segment vectors of every tap: one forward pass per batch, then max over time.

    Returns:
        Tap -> float32 (num_segments, channels) (a bf16 model's taps are cast by ``pool_time``;
        the max of bfloat16 values is exact in float32).
    """
    out: dict[str, list[np.ndarray]] = {tap: [] for tap in specs.TAPS}
    for k, taps in fixed_batches(model.extractor.predict_on_batch, segments, batch_size):
        for tap in specs.TAPS:
            out[tap].append(features_lib.pool_time(np.asarray(taps[tap])[:k]))
    return {tap: np.concatenate(parts) for tap, parts in out.items()}


def features_of_waves(
    waves: Sequence[np.ndarray], models: Mapping[str, TapModel], song_pool: str = "mean", batch_size: int = 64,
    segments: str = "cover",
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Song vectors of a few tracks, their segments batched together across tracks.

    Args:
        waves: float32 (num_samples,) waveforms at the models' sample rate.
        models: Scale -> ``TapModel``.
        song_pool: One of ``msagg.data.formats.features.SONG_POOLS``.
        batch_size: Segments per forward pass.
        segments: "cover" or "drop" (``msagg.data.segments``).

    Returns:
        ``(features, num_segments)``: scale -> tap -> float32 (len(waves), dim), and
        scale -> int32 (len(waves),).
    """
    features: dict[str, dict[str, np.ndarray]] = {}
    counts: dict[str, np.ndarray] = {}
    for scale, model in models.items():
        per_track = [segment(w, model.input_length, segments) for w in waves]
        counts[scale] = np.array([len(s) for s in per_track], dtype=np.int32)
        vectors = _segment_vectors(model, np.concatenate(per_track), batch_size)
        bounds = np.cumsum(counts[scale])[:-1]
        features[scale] = {
            tap: np.stack([features_lib.pool_song(v, song_pool) for v in np.split(vectors[tap], bounds)])
            for tap in specs.TAPS
        }
    return features, counts


def song_features(
    waves: Sequence[np.ndarray],
    pretrain: str | os.PathLike | PretrainRun,
    scales: Sequence[str] = (),
    *,
    song_pool: str = "mean",
    batch_size: int = 64,
    precision: str = "float32",
    segments: str = "cover",
) -> dict[str, dict[str, np.ndarray]]:
    """Features of new audio, as extract computes them (for ``msagg predict``).

    Args:
        waves: float32 waveforms at the models' sample rate.
        pretrain: The pretrain run whose models to use (its folder, or a ``PretrainRun``).
        scales: Scales to compute (empty: all of the run).
        song_pool: Song pooling, as the classifier's features were made.
        batch_size: Segments per forward pass.
        precision: What the models compute in ("float32" or "bf16").
        segments: How songs are cut, as the classifier's features were made ("cover" or "drop").

    Returns:
        Scale -> tap -> float32 (len(waves), dim).
    """
    models = load_tap_models(pretrain, scales, precision=precision)
    features: dict[str, dict[str, list[np.ndarray]]] = {s: {t: [] for t in specs.TAPS} for s in models}
    for chunk in _chunks(range(len(waves)), lambda i: len(waves[i]), models, batch_size, segments):
        block, _ = features_of_waves([waves[i] for i in chunk], models, song_pool, batch_size, segments)
        for scale, taps in block.items():
            for tap, rows in taps.items():
                features[scale][tap].append(rows)
    return {s: {t: np.concatenate(rows) for t, rows in taps.items()} for s, taps in features.items()}


def _chunks(indices: Sequence[int], length_of, models: Mapping[str, TapModel], batch_size: int,
            segments: str = "cover") -> Iterator[list[int]]:
    """The track groups extract computes one at a time (``msagg.data.segments.track_groups``)."""
    return track_groups(indices, length_of, [m.input_length for m in models.values()], batch_size, segments)


def scale_infos(models: Mapping[str, TapModel], song_pool: str) -> dict[str, ScaleInfo]:
    """What the features file records of each model (``ScaleInfo``), from the loaded models."""
    return {
        scale: ScaleInfo(
            input_length=m.input_length,
            sample_rate=m.sample_rate,
            model_hash=m.model_hash,
            num_params=m.num_params,
            dims={tap: features_lib.pooled_dim(c, song_pool) for tap, c in m.channels.items()},
            block=m.block,
            multi=m.multi,
            tap_layers=m.tap_layers,
        )
        for scale, m in models.items()
    }


def extract_rows(cache: AudioCache, models: Mapping[str, TapModel], config: Config, rows: range,
                 batch_size: int) -> Iterator[tuple[int, dict, dict, dict]]:
    """Song features of the cache's ``rows``, group by group (``_chunks``), as ``FeaturesWriter.write`` takes them.

    Both engines compute through it (the ray engine on each range of rows, which starts and ends
    at group boundaries), so their rows are the same numbers.

    Yields:
        ``(k, features, num_segments, classic)`` for the next ``k`` rows: scale -> tap -> float32
        (k, dim), scale -> int32 (k,), classic name -> float32 (k, dim).
    """
    for chunk in _chunks(rows, lambda i: cache.lengths[i], models, batch_size, config.segments):
        waves = [cache.track(i) for i in chunk]
        block, counts = features_of_waves(waves, models, config.song_pool, batch_size, config.segments)
        classic = {name: classic_features(name, waves, cache.sample_rate) for name in config.classic}
        yield len(chunk), block, counts, classic


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
    ray_options: Mapping[str, Any] | None = None,
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
        ray_options: With engine "ray": keyword options of ``msagg.stages.engines.ray_extract.Extractors``
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
        actors = None
        if config.engine == "ray":  # before folder.start: without Ray, or its cluster, nothing is written
            from msagg.stages.engines import ray_extract as ray_engine

            session = stack.enter_context(ray_engine.session(config.address))
        if not folder.start(overwrite, upstream={"pretrain": pretrain.upstream, "cache": prepared}):
            return final
        remove_stale_temps(out_dir)  # temps of atomic writes a killed run left (skipped.csv, DONE)
        if config.engine == "ray":
            computation = ray_engine.Computation(load_tap_models, scale_infos, extract_rows)
            actors = stack.enter_context(ray_engine.Extractors(session, config, cache, scales, batch_size,
                                                               computation=computation, **(ray_options or {})))
            infos = actors.scale_infos()
        else:
            models = load_tap_models(pretrain, scales, precision=config.precision)
            infos = scale_infos(models, config.song_pool)
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
        logger.info("extract %d tracks of %s (%d Hz) with scales %s in %s, segments %s, song pooling %s, "
                    "classic features %s, engine %s%s", num_tracks, cache.dataset, cache.sample_rate, ", ".join(scales),
                    config.precision, config.segments, config.song_pool, ", ".join(config.classic) or "none",
                    config.engine,
                    f"; resuming after {start}" if start else "")
        began = time.monotonic()
        with writer, tqdm(total=num_tracks, initial=start, unit="track", desc="extract", disable=not progress,
                          dynamic_ncols=True) as bar:
            rows = (actors.rows(start) if actors is not None
                    else extract_rows(cache, models, config, range(start, num_tracks), batch_size))
            for k, block, counts, classic in rows:
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
                   **({"ray": actors.summary()} if actors is not None else {})})
    return path
