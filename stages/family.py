"""The Python API: a family of SampleCNNs that embeds and tags audio, numpy in and numpy out.

A family is a finished pretrain run (one SampleCNN per m^n scale), or the name of one msagg ships
("general"). ``embed`` gives the song vectors extract computes (every scale's last three hidden
layers, max-pooled over time within each segment, then pooled over the song), keyed as in
features.h5; ``tag`` gives the end-to-end models' tag probabilities. Songs of any length go
through the models segment by segment in bounded batches (``msagg.stages.engines.streaming``);
files are decoded block by block, so memory does not grow with their length.

Example::

    import msagg, soundfile as sf

    family = msagg.load("general")
    wave, rate = sf.read("song.wav", dtype="float32")
    song = family.embed(wave, rate)
    song.vectors["3^9/-1"]                # float32 (dim,)
    family.tag(wave, rate).top(3)         # [("guitar", 0.81), ("rock", 0.64), ...]

Importing this module loads no backend; the models are loaded the first time they are needed.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Iterable, Sequence

import numpy as np

from msagg.data.audio import NON_FINITE, AudioError, stream
from msagg.data.formats.embeddings import scale_of, vector_name
from msagg.data.formats.features import SONG_POOLS, pooled_dim
from msagg.data.segments import SEGMENTINGS
from msagg.models import specs
from msagg.stages import quiet

DEFAULT_FAMILY = "general"
TAG_SEGMENTS = "drop"
"""How ``tag`` cuts songs: as pretrain evaluated the end-to-end models (and ``msagg predict --pretrain``)."""


@dataclasses.dataclass(frozen=True)
class Embedding:
    """The vectors of one song.

    Attributes:
        vectors: Name (``"<scale>/<tap>"``, e.g. ``"3^9/-1"``, as ``/features/<scale>/<tap>`` in
            features.h5) -> float32 (dim,) song vector.
        num_segments: Scale -> segments the song was cut into.
        duration_sec: The song's length, seconds.
        frames: With ``frames=True``: name -> float32 (num_segments, channels), one vector per
            segment (the tap max-pooled over time); else None.
        times: With ``frames=True``: scale -> float64 (num_segments,), each segment's start in
            seconds; else None.
    """

    vectors: dict[str, np.ndarray]
    num_segments: dict[str, int]
    duration_sec: float
    frames: dict[str, np.ndarray] | None = None
    times: dict[str, np.ndarray] | None = None

    @property
    def names(self) -> list[str]:
        """The vector names, scales by (m, n), taps -3, -2, -1."""
        return list(self.vectors)

    def frame_times(self, name: str) -> np.ndarray:
        """Start of each of ``frames[name]``'s rows, seconds (float64)."""
        if self.times is None:
            raise ValueError("no frames: embed with frames=True")
        return self.times[scale_of(name)]

    def concatenated(self, names: Sequence[str] = ()) -> np.ndarray:
        """One float32 vector: those of ``names`` (default all, in ``names`` order) joined end to end."""
        return np.concatenate([self.vectors[name] for name in (names or self.names)])


@dataclasses.dataclass(frozen=True)
class Tags:
    """The tag probabilities of one song.

    Attributes:
        scores: Tag (``str``) -> probability: the mean over each model's segments, averaged over
            the models (a softmax's class probabilities for a family trained on classes).
        task: "tags" (independent probabilities) or "classes" (they sum to 1).
        duration_sec: The song's length, seconds.
        over_time: With ``over_time=True``: float32 (num_windows, num_tags), the scores of
            consecutive windows as long as the longest model's input (columns in ``labels``
            order); else None.
        times: With ``over_time=True``: float64 (num_windows,), each window's start in seconds.
        window_sec: With ``over_time=True``: the windows' length, seconds.
    """

    scores: dict[str, float]
    task: str
    duration_sec: float
    over_time: np.ndarray | None = None
    times: np.ndarray | None = None
    window_sec: float | None = None

    @property
    def labels(self) -> list[str]:
        """The tags, in the order of ``over_time``'s columns."""
        return list(self.scores)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` likeliest tags, likeliest first."""
        return sorted(self.scores.items(), key=lambda kv: -kv[1])[:k]


class Family:
    """A family of SampleCNNs ready to embed and tag audio.

    Args:
        pretrain: A finished pretrain run folder, or the name of a shipped family ("general").
        scales: The scales to use (default: all of the family's).
        precision: What ``embed`` computes in, "float32" or "bf16".
        batch_size: Segments per forward pass (fewer for models whose activations are large).

    Attributes:
        run: The ``msagg.stages.runs.pretrain_run.PretrainRun``.
        scales: Scale keys, ordered by (m, n).
        sample_rate: Hz the models read; audio at another rate is resampled.
        labels: The end-to-end models' tags (``str``).
        task: "tags" or "classes".
        input_lengths: Scale -> samples per segment.

    Raises:
        PretrainRunError: For a folder that is no finished pretrain run, or a scale it lacks.

    Example:
        >>> family = Family("runs/demo/pretrain")  # doctest: +SKIP
        >>> family.names[:3]  # doctest: +SKIP
        ['3^8/-3', '3^8/-2', '3^8/-1']
    """

    def __init__(self, pretrain: str | os.PathLike = DEFAULT_FAMILY, *, scales: Sequence[str] = (),
                 precision: str = "float32", batch_size: int = 64):
        from msagg.stages.runs.pretrain_run import PretrainRun

        if precision not in specs.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(specs.PRECISIONS)}, got {precision!r}")
        self.run = PretrainRun(pretrain)
        self.scales = self.run.select(scales)
        self.sample_rate = self.run.sample_rate
        self.run.check_sample_rate(self.sample_rate, f"the first model of {self.run.path}", self.scales)
        first = self.run.metrics(self.scales[0])
        self.labels = [str(name) for name in first["label_names"]]
        self.task = str(first["task"])
        self.input_lengths = {scale: self.run.input_length(scale) for scale in self.scales}
        self.precision = precision
        self.batch_size = int(batch_size)
        self._tap_models: dict | None = None
        self._end_to_end: dict | None = None

    def __repr__(self) -> str:
        return f"Family({str(self.run.path)!r}, scales={self.scales})"

    @property
    def names(self) -> list[str]:
        """The names of ``embed``'s vectors: ``"<scale>/<tap>"`` per scale and tap."""
        return [vector_name(scale, tap) for scale in self.scales for tap in specs.TAPS]

    def channels(self) -> dict[str, int]:
        """Vector name -> channels of its layer (a frame's length; loads the models)."""
        return {vector_name(s, tap): c for s, m in self.tap_models().items() for tap, c in m.channels.items()}

    def dims(self, song_pool: str = "mean") -> dict[str, int]:
        """Vector name -> length of the song vector ``embed`` gives with ``song_pool``."""
        return {name: pooled_dim(c, song_pool) for name, c in self.channels().items()}

    # --- embed ------------------------------------------------------------------------------

    def embed(self, audio: np.ndarray, sample_rate: int, *, frames: bool = False, song_pool: str = "mean",
              segments: str = "cover") -> Embedding:
        """The multi-level multi-scale vectors of a song.

        Args:
            audio: float (num_samples,) or (num_samples, num_channels) samples in [-1, 1] (as
                ``soundfile.read`` gives them); channels are averaged.
            sample_rate: Its rate, Hz (resampled to ``self.sample_rate`` when it differs).
            frames: Also give every segment's vectors and start times.
            song_pool: "mean" (extract's default), "max", "meanmax" or "meanstd".
            segments: "cover" (every sample read; extract's default) or "drop".

        Returns:
            An ``Embedding``. A song shorter than a model's input is zero-padded to one segment.

        Raises:
            AudioError: For audio holding no samples or non-finite ones.
            ValueError: For an array of another shape or dtype, or an unknown option.

        Example:
            >>> song = family.embed(np.sin(np.arange(66150) * 0.05), 22050, frames=True)  # doctest: +SKIP
            >>> song.frames["3^9/-1"].shape, song.times["3^9"][:2]  # doctest: +SKIP
            ((2, 128), array([0.   , 0.322]))
        """
        return self._embed([self._wave(audio, sample_rate)], frames, song_pool, segments)

    def embed_file(self, path: str | os.PathLike, *, frames: bool = False, song_pool: str = "mean",
                   segments: str = "cover") -> Embedding:
        """``embed`` of an audio file, decoded block by block (``msagg.data.audio.stream``).

        Raises:
            AudioError: For a file that is missing, unreadable, truncated or holds no samples.
        """
        return self._embed(stream(path, self.sample_rate), frames, song_pool, segments)

    def tap_models(self) -> dict:
        """Scale -> ``msagg.stages.engines.taps.TapModel``, loaded once."""
        if self._tap_models is None:
            quiet.import_backend()
            from msagg.stages.engines.taps import load_tap_models

            self._tap_models = load_tap_models(self.run, self.scales, precision=self.precision)
        return self._tap_models

    def _embed(self, blocks: Iterable[np.ndarray], frames: bool, song_pool: str, segments: str) -> Embedding:
        if song_pool not in SONG_POOLS:
            raise ValueError(f"song_pool must be one of {', '.join(SONG_POOLS)}, got {song_pool!r}")
        if segments not in SEGMENTINGS:
            raise ValueError(f"segments must be one of {', '.join(SEGMENTINGS)}, got {segments!r}")
        from msagg.data.formats.features import pool_song

        quiet.import_backend()  # before the engines, which import Keras: its start-up notices stay hidden
        from msagg.stages.engines import streaming

        models = self.tap_models()
        streams = {scale: streaming.ModelStream(m.extractor, streaming.pooled_taps, m.input_length,
                                                segments, m.batch_for(self.batch_size))
                   for scale, m in models.items()}
        num_samples = streaming.feed(blocks, streams.values())
        vectors, counts, per_segment, times = {}, {}, {}, {}
        for scale, model_stream in streams.items():
            starts, taps = model_stream.finish()
            counts[scale] = len(starts)
            times[scale] = starts / self.sample_rate
            for tap in specs.TAPS:
                vectors[vector_name(scale, tap)] = pool_song(taps[tap], song_pool)
                per_segment[vector_name(scale, tap)] = taps[tap]
        return Embedding(vectors, counts, num_samples / self.sample_rate,
                         per_segment if frames else None, times if frames else None)

    # --- tag --------------------------------------------------------------------------------

    def tag(self, audio: np.ndarray, sample_rate: int, *, over_time: bool = False) -> Tags:
        """The tag probabilities of a song, from every scale's end-to-end model.

        Each model scores the song's non-overlapping segments; the song's scores are their mean,
        averaged over the models (what ``msagg predict --pretrain`` prints). With ``over_time``,
        consecutive windows as long as the longest model's input get the mean of each model's
        segment scores over the window (weighted by how much of each segment lies in it).

        Args:
            audio: As ``embed``'s.
            sample_rate: Its rate, Hz.
            over_time: Also give the scores of every window, with its start time.

        Returns:
            A ``Tags``; its keys are ``str``.

        Raises:
            AudioError: For audio shorter than the longest model's input (zero-padding would be
                scored as if it were music), holding no samples or non-finite ones.

        Example:
            >>> tags = family.tag(wave, 22050, over_time=True)  # doctest: +SKIP
            >>> tags.top(2), tags.over_time.shape, tags.times[:3]  # doctest: +SKIP
            ([('piano', 0.71), ('classical', 0.55)], (11, 74), array([0.   , 2.678, 5.356]))
        """
        wave = self._wave(audio, sample_rate)
        self._check_long_enough(wave.shape[0], "audio")
        return self._tag([wave], over_time, "audio")

    def tag_file(self, path: str | os.PathLike, *, over_time: bool = False) -> Tags:
        """``tag`` of an audio file, decoded block by block.

        Raises:
            AudioError: For a file that is missing, unreadable, truncated, holds no samples, or
                is shorter than the longest model's input.
        """
        return self._tag(stream(path, self.sample_rate), over_time, path)

    def end_to_end_models(self) -> dict:
        """Scale -> the end-to-end ``keras.Model`` (waveform segments -> tag probabilities), loaded once."""
        if self._end_to_end is None:
            quiet.import_backend()
            self._end_to_end = {scale: self.run.load(scale) for scale in self.scales}
        return self._end_to_end

    def _tag(self, blocks: Iterable[np.ndarray], over_time: bool, what: str | os.PathLike) -> Tags:
        quiet.import_backend()  # before the engines, which import Keras: its start-up notices stay hidden
        from msagg.stages.engines import streaming

        models = self.end_to_end_models()
        streams = {scale: streaming.ModelStream(model, streaming.scores, self.input_lengths[scale],
                                                TAG_SEGMENTS, streaming.batch_rows(model, self.batch_size))
                   for scale, model in models.items()}
        num_samples = streaming.feed(blocks, streams.values())
        self._check_long_enough(num_samples, what)
        per_scale = {scale: s.finish() for scale, s in streams.items()}
        song = np.mean([rows["scores"].mean(axis=0, dtype=np.float64) for _, rows in per_scale.values()], axis=0)
        scores = {label: float(p) for label, p in zip(self.labels, song)}
        if not over_time:
            return Tags(scores, self.task, num_samples / self.sample_rate)
        window = max(self.input_lengths.values())
        starts = np.arange(max(1, num_samples // window), dtype=np.int64) * window
        grid = np.mean([_windowed(starts, window, seg_starts, self.input_lengths[scale], rows["scores"])
                        for scale, (seg_starts, rows) in per_scale.items()], axis=0)
        return Tags(scores, self.task, num_samples / self.sample_rate, grid.astype(np.float32),
                    starts / self.sample_rate, window / self.sample_rate)

    def _check_long_enough(self, num_samples: int, what: str | os.PathLike) -> None:
        scale = max(self.scales, key=lambda s: self.input_lengths[s])
        need = self.input_lengths[scale]
        if num_samples < need:
            raise AudioError(what, f"too short to score: {seconds_text(num_samples, self.sample_rate)} long, at least "
                                   f"{seconds_text(need, self.sample_rate)} needed (the {scale} model's input)")

    # --- input ------------------------------------------------------------------------------

    def _wave(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """float32 (num_samples,) mono samples at ``self.sample_rate`` (as ``msagg.data.audio.load`` makes them)."""
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
        wave = np.asarray(audio)
        if wave.dtype.kind != "f":
            raise ValueError(f"expected float samples in [-1, 1], got dtype {wave.dtype} (divide int16 samples "
                             "by 32768, or read the file with soundfile.read(path, dtype='float32'))")
        if wave.ndim == 2 and wave.shape[1] > wave.shape[0]:
            raise ValueError(f"expected (num_samples, num_channels), got shape {wave.shape}; "
                             "transpose a (channels, samples) array")
        if wave.ndim not in (1, 2):
            raise ValueError(f"expected (num_samples,) or (num_samples, num_channels), got shape {wave.shape}")
        wave = wave.astype(np.float32, copy=False)
        if wave.shape[0] == 0:
            raise AudioError("audio", "no audio samples (0 frames)")
        if not np.isfinite(wave).all():
            raise AudioError("audio", NON_FINITE)
        if wave.ndim == 2:
            wave = wave.mean(axis=1, dtype=np.float32) if wave.shape[1] > 1 else wave[:, 0]
        if sample_rate != self.sample_rate:
            import soxr

            wave = soxr.resample(wave, int(sample_rate), self.sample_rate, quality="HQ")
        return np.ascontiguousarray(wave, dtype=np.float32)


def _windowed(starts: np.ndarray, window: int, seg_starts: np.ndarray, length: int, values: np.ndarray) -> np.ndarray:
    """Per window ``[start, start + window)``, the mean of the segments' rows weighted by their overlap with it.

    Returns:
        float64 (len(starts), values.shape[1]).
    """
    lo = np.maximum(starts[:, None], seg_starts[None, :])
    hi = np.minimum(starts[:, None] + window, seg_starts[None, :] + length)
    weights = np.clip(hi - lo, 0, None).astype(np.float64)  # (windows, segments)
    return weights @ values.astype(np.float64) / np.maximum(weights.sum(axis=1, keepdims=True), 1.0)


def seconds_text(num_samples: int, sample_rate: int) -> str:
    """"0.000454 s", "2.68 s": three significant digits, so a few samples never read as 0."""
    return f"{num_samples / sample_rate:.3g} s"


def load(pretrain: str | os.PathLike = DEFAULT_FAMILY, **options) -> Family:
    """Opens a family of SampleCNNs: ``Family(pretrain, **options)`` (``msagg.load``).

    Example:
        >>> import msagg
        >>> family = msagg.load("runs/demo/pretrain")  # doctest: +SKIP
        >>> family.embed(wave, 22050).vectors["3^9/-1"].shape  # doctest: +SKIP
        (128,)
    """
    return Family(pretrain, **options)


def _family(pretrain: str | os.PathLike) -> Family:
    """The family ``pretrain`` names, opened once per folder."""
    from msagg.models.pretrained import resolve

    return _opened(os.path.abspath(resolve(pretrain)))


@functools.lru_cache(maxsize=4)
def _opened(folder: str) -> Family:
    return Family(folder)


def embed_file(path: str | os.PathLike, pretrain: str | os.PathLike = DEFAULT_FAMILY, *, frames: bool = False,
               song_pool: str = "mean", segments: str = "cover") -> Embedding:
    """The vectors of an audio file (``msagg.embed_file``): ``Family.embed_file`` with the family
    ``pretrain``, whose models are loaded once and kept for later calls.

    Example:
        >>> import msagg
        >>> song = msagg.embed_file("song.flac")  # doctest: +SKIP
        >>> sorted(song.vectors)[:2]  # doctest: +SKIP
        ['3^8/-1', '3^8/-2']
    """
    return _family(pretrain).embed_file(path, frames=frames, song_pool=song_pool, segments=segments)


def tag_file(path: str | os.PathLike, pretrain: str | os.PathLike = DEFAULT_FAMILY, *,
             over_time: bool = False) -> Tags:
    """The tag probabilities of an audio file (``msagg.tag_file``), with the family ``pretrain``
    kept loaded as ``embed_file`` keeps it."""
    return _family(pretrain).tag_file(path, over_time=over_time)
