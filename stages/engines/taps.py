"""What both extract engines compute: SampleCNN tap models and the song-level features of audio.

A track's segments go through one forward pass per model that yields the three taps, each
max-pooled over time within a segment, then pooled over the song (``song_pool``). The local engine
(``msagg.stages.engines.local_extract``) runs this in the extract process; the Ray engine
(``msagg.stages.engines.ray_extract``) on actors: the same rows either way. ``msagg predict`` uses the same
functions on audio files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import keras
import numpy as np

from msagg.data.classic import TEACHER_SETS, classic_features
from msagg.data.formats import features as features_lib
from msagg.data.formats.cache import AudioCache
from msagg.data.formats.features_writer import ScaleInfo
from msagg.data.segments import segment, track_groups
from msagg.models import sample_cnn, specs
from msagg.stages.runs import interrupt
from msagg.stages.runs.pretrain_run import PretrainRun

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Models

BATCH_MEMORY_MB = 160
"""What the largest activation of one forward pass may hold: a model whose segments are long (3^9, 5^6,
2^14 at full width: about 8-10 MB of activations each in float32) runs fewer than ``batch_size`` segments
at a time, so extracting the eight paper scales stays under 2 GB. Small models keep ``batch_size``."""


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
        segment_bytes: Bytes of the model's largest activation for one segment
            (``largest_activation_bytes``); 0: unknown, no limit.
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
    segment_bytes: int = 0

    def batch_for(self, batch_size: int) -> int:
        """Segments per forward pass: ``batch_size``, or fewer where ``BATCH_MEMORY_MB`` asks."""
        if self.segment_bytes <= 0:
            return batch_size
        return max(1, min(batch_size, BATCH_MEMORY_MB * 2**20 // self.segment_bytes))


def largest_activation_bytes(model: keras.Model) -> int:
    """Bytes of the largest layer output of ``model`` for one input row, counted as float32 whatever
    the model computes in (a bf16 model keeps float32 copies too: batch norm computes in float32)."""
    largest = 0
    for layer in model.layers:
        for output in keras.tree.flatten(layer.output):
            largest = max(largest, 4 * int(np.prod([d for d in output.shape[1:] if d is not None])))
    return largest


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
            segment_bytes=largest_activation_bytes(model),
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
        with interrupt.deferred():  # Ctrl-C between passes, not inside the backend's C++ code
            out = run(buf)
        yield len(part), out


# ---------------------------------------------------------------------------------------------
# Feature computation


def _segment_vectors(model: TapModel, segments: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Per-segment vectors of every tap: one forward pass per batch, then max over time.

    Returns:
        Tap -> float32 (num_segments, channels) (a bf16 model's taps are cast by ``pool_time``;
        the max of bfloat16 values is exact in float32).
    """
    out: dict[str, list[np.ndarray]] = {tap: [] for tap in specs.TAPS}
    for k, taps in fixed_batches(model.extractor.predict_on_batch, segments, model.batch_for(batch_size)):
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
    return pooled_features(waves, models, song_pool=song_pool, batch_size=batch_size, segments=segments)


def pooled_features(waves: Sequence[np.ndarray], models: Mapping[str, TapModel], *, song_pool: str = "mean",
                    batch_size: int = 64, segments: str = "cover") -> dict[str, dict[str, np.ndarray]]:
    """``song_features`` with models already loaded (``load_tap_models``): scale -> tap -> float32 (len(waves), dim)."""
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


def extract_rows(cache: AudioCache, models: Mapping[str, TapModel], config: Any, rows: range,
                 batch_size: int) -> Iterator[tuple[int, dict, dict, dict]]:
    """Song features of the cache's ``rows``, group by group (``_chunks``), as ``FeaturesWriter.write`` takes them.

    Both engines compute through it (the ray engine on each range of rows, which starts and ends
    at group boundaries), so their rows are the same numbers. ``config`` is extract's Config (its
    ``song_pool``, ``segments`` and ``classic``).

    Yields:
        ``(k, features, num_segments, classic)`` for the next ``k`` rows: scale -> tap -> float32
        (k, dim), scale -> int32 (k,), classic name -> float32 (k, dim).
    """
    for chunk in _chunks(rows, lambda i: cache.lengths[i], models, batch_size, config.segments):
        waves = [cache.track(i) for i in chunk]
        block, counts = features_of_waves(waves, models, config.song_pool, batch_size, config.segments)
        classic = {name: reference_features(name, waves, cache.sample_rate) for name in config.classic}
        yield len(chunk), block, counts, classic


def reference_features(name: str, waves: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    """float32 (len(waves), dim) of the reference set ``name`` (``msagg.data.classic.CLASSIC``): the
    MFCC statistics (librosa), or the teacher's layers (``msagg.stages.teacher.song_features``)."""
    if name in TEACHER_SETS:
        from msagg.stages.teacher import song_features

        return song_features(name, waves, sample_rate)
    return classic_features(name, waves, sample_rate)
