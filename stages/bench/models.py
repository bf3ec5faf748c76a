"""Throughput and memory of the SampleCNN family: training and inference segments/s per scale, variant and precision."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.metadata
import logging
import math
import multiprocessing
import os
import platform
import time
from typing import Any, Sequence

import numpy as np

from msagg.models import sample_cnn, specs
from msagg.models.blocks import BLOCKS
from msagg.stages.bench import measure
from msagg.stages import quiet

logger = logging.getLogger(__name__)

TRAIN_FLOPS_FACTOR = 3.0
"""A training step costs about three forward passes (forward, input and weight gradients)."""

QUICK = {"train_steps": 2, "warmup_steps": 1, "infer_batches": 1, "infer_batch_size": 8}
"""Settings of ``quick=True``: a smoke test, not a measurement."""


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _num_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _device(backend: str) -> str:
    """The accelerator the backend computes on, in words, or the CPU."""
    try:
        if backend == "jax":
            import jax

            dev = jax.devices()[0]
            if dev.platform != "cpu":
                return f"{dev.platform.upper()}: {dev.device_kind}"
        elif backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return f"GPU: {details.get('device_name', gpus[0].name)}"
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return f"GPU: {torch.cuda.get_device_name(0)}"
    except Exception as err:  # noqa: BLE001 - a description must never fail the benchmark
        logger.debug("device query failed: %s", err)
    return f"CPU: {_cpu_name()} ({_num_cpus()} threads)"


def environment() -> dict[str, Any]:
    """Backend, device and package versions, recorded with every result."""
    import keras

    backend = keras.backend.backend()
    versions = {}
    for name in ("keras", "tensorflow", "jax", "jaxlib", "torch", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "backend": backend,
        "device": _device(backend),
        "num_cpus": _num_cpus(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _peak_device_mb(backend: str) -> float | None:
    try:
        if backend == "jax":
            import jax

            dev = jax.devices()[0]
            if dev.platform != "cpu":
                return dev.memory_stats()["peak_bytes_in_use"] / 2**20
        elif backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    except Exception:  # noqa: BLE001 - optional figure
        pass
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """What to build and how much to time (see ``run_benchmark``)."""

    block: str = "basic"
    multi: bool = False
    width: float = 1.0
    batch_size: int = 23
    num_labels: int = 50
    train_steps: int = 4
    warmup_steps: int = 1
    infer_batches: int = 3
    infer_batch_size: int = 64
    sample_rate: int = 22050
    seed: int = 0
    precision: str = "float32"

    def __post_init__(self):
        for key in ("batch_size", "num_labels", "train_steps", "infer_batches", "infer_batch_size", "sample_rate"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.warmup_steps < 0 or not self.width > 0:
            raise ValueError(f"warmup_steps must be >= 0 and width > 0, got {self.warmup_steps}, {self.width}")
        specs.variant_name(self.block, self.multi)  # raises ValueError naming a bad block or multi
        specs.dtype_policy(self.precision)  # raises ValueError naming the precisions

    @property
    def variant(self) -> str:
        """"basic", "se", "rese+multi" ..."""
        return specs.variant_name(self.block, self.multi)


def benchmark_scale(scale: str, settings: Settings = Settings()) -> dict[str, Any]:
    """Measures one scale of ``settings``' variant in this process (see ``run_benchmark`` for the fields)."""
    import keras

    width, batch_size, num_labels = settings.width, settings.batch_size, settings.num_labels
    infer_batch_size, sample_rate, seed = settings.infer_batch_size, settings.sample_rate, settings.seed

    spec = specs.get_spec(scale)
    length = spec.input_length
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    variant = {"block": settings.block, "multi": settings.multi}
    model = sample_cnn.build_sample_cnn(scale, num_labels, "tags", width=width,
                                        dtype=specs.build_dtype(settings.precision), **variant)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True), loss="binary_crossentropy")
    num_params = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    # Synthetic input: quiet noise, random tags.
    x = (0.1 * rng.standard_normal((batch_size, length))).astype(np.float32)
    y = (rng.random((batch_size, num_labels)) < 0.1).astype(np.float32)
    for _ in range(settings.warmup_steps):  # the first step compiles
        model.train_on_batch(x, y)
    started = time.perf_counter()
    for _ in range(settings.train_steps):
        model.train_on_batch(x, y)  # returns the loss as numpy: waits for the step
    train_rate = settings.train_steps * batch_size / (time.perf_counter() - started)

    xi = (0.1 * rng.standard_normal((infer_batch_size, length))).astype(np.float32)
    for _ in range(max(1, settings.warmup_steps)):
        model.predict_on_batch(xi)
    started = time.perf_counter()
    for _ in range(settings.infer_batches):
        np.asarray(model.predict_on_batch(xi))
    infer_rate = settings.infer_batches * infer_batch_size / (time.perf_counter() - started)

    macs = specs.count_multiply_adds(scale, width, num_labels, **variant)
    seconds = length / sample_rate
    backend = keras.backend.backend()
    return {
        "scale": scale,
        "variant": settings.variant,
        "block": settings.block,
        "multi": settings.multi,
        "precision": settings.precision,
        "input_length": length,
        "segment_sec": round(seconds, 4),
        "sample_rate": sample_rate,
        "width": width,
        "num_params": num_params,
        "multiply_adds_per_segment": macs,
        "gmacs_per_segment": round(macs / 1e9, 4),
        "batch_size": batch_size,
        "infer_batch_size": infer_batch_size,
        "train_steps": settings.train_steps,
        "infer_batches": settings.infer_batches,
        "train_segments_per_sec": measure.sig(train_rate),
        "infer_segments_per_sec": measure.sig(infer_rate),
        "train_realtime_factor": measure.sig(train_rate * seconds),
        "infer_realtime_factor": measure.sig(infer_rate * seconds),
        "train_gflops": measure.sig(TRAIN_FLOPS_FACTOR * 2 * macs * train_rate / 1e9),
        "infer_gflops": measure.sig(2 * macs * infer_rate / 1e9),
        # VmHWM, not ru_maxrss: a spawned process inherits its parent's ru_maxrss (the CLI's ~800 MB).
        "peak_rss_mb": round(measure.own_peak_rss_mb(), 1),
        "peak_device_mb": None if (mb := _peak_device_mb(backend)) is None else round(mb, 1),
        **environment(),
    }


def _isolated(scale: str, settings: Settings) -> dict[str, Any]:
    # A fresh process per scale, so that peak resident memory belongs to that scale alone.
    # It imports the backend as the CLI does: start-up notices hidden unless debugging.
    context = multiprocessing.get_context("spawn")
    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=quiet.import_backend,
                                                initargs=(verbose,)) as pool:
        return pool.submit(benchmark_scale, scale, settings).result()


def plan(
    scales: Sequence[str] = specs.PAPER_SCALES,
    *,
    blocks: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    quick: bool = False,
    **options: Any,
) -> list[tuple[str, Settings]]:
    """Checks a request and lists what ``run_benchmark`` measures, in order: (scale key, settings).

    Raises:
        ValueError: As ``run_benchmark``, before anything is built.
    """
    scales = [specs.parse_scale(s) for s in scales]
    if not scales:
        raise ValueError("no scales to measure")
    if blocks is not None and "block" in options:
        raise ValueError(f"give blocks or block, not both (got blocks={list(blocks)!r}, block={options['block']!r})")
    settings = Settings(**options)
    if quick:
        settings = dataclasses.replace(settings, **QUICK)
    if precisions is not None and "precision" in options:
        raise ValueError(f"give precisions or precision, not both (got precisions={list(precisions)!r}, "
                         f"precision={options['precision']!r})")
    variants = [dataclasses.replace(settings, block=b) for b in blocks] if blocks is not None else [settings]
    if not variants:
        raise ValueError("no blocks to measure: give at least one of " + ", ".join(BLOCKS))
    if precisions is not None:
        variants = [dataclasses.replace(v, precision=p) for v in variants for p in precisions]
        if not variants:
            raise ValueError("no precisions to measure: give at least one of " + ", ".join(specs.PRECISIONS))
    return [(scale, each) for scale in scales for each in variants]


def run_benchmark(
    scales: Sequence[str] = specs.PAPER_SCALES,
    *,
    blocks: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    quick: bool = False,
    isolate: bool = True,
    **options: Any,
) -> list[dict[str, Any]]:
    """Measures training and inference throughput of each scale (block type, precision) on synthetic input.

    Training runs ``train_steps`` SGD steps (Nesterov, batch ``batch_size``) after
    ``warmup_steps`` untimed ones; inference runs ``infer_batches`` batches of
    ``infer_batch_size`` segments through ``predict_on_batch`` after one untimed batch.

    Args:
        scales: Scale keys ("3^9" ...).
        blocks: Block types to measure at every scale, from ``msagg.models.blocks.BLOCKS`` (default: the
            ``block`` option, "basic"); each with the ``multi`` option's head.
        precisions: Precisions to measure every block type in, side by side, from
            ``msagg.models.specs.PRECISIONS`` ("float32", "bf16": Keras' mixed_bfloat16; default: the
            ``precision`` option, "float32").
        quick: Use ``QUICK``'s very small settings (a smoke test, not a measurement).
        isolate: Measure each model in a fresh process, so the peak memory is its own.
        **options: ``Settings`` fields: block ("basic", "se", "res", "rese"; or use ``blocks``),
            multi (Kim et al.'s multi-level head), width (1.0 = the paper's models), batch_size (the paper's
            23), num_labels, train_steps, warmup_steps, infer_batches, infer_batch_size (how much
            to time), sample_rate (Hz, for the real-time factors), seed.

    Returns:
        One dict per scale, block and precision, scale-major: ``scale, variant`` ("basic",
        "rese+multi" ...), ``block, multi, precision, input_length, segment_sec, width, num_params,
        multiply_adds_per_segment, gmacs_per_segment`` (one forward pass), ``train_segments_per_sec,
        infer_segments_per_sec, train_realtime_factor, infer_realtime_factor`` (audio seconds per
        wall second), ``train_gflops, infer_gflops`` (achieved, 2 FLOPs per multiply-add, training
        counted as 3 forward passes), ``peak_rss_mb`` (process peak resident memory),
        ``peak_device_mb`` (accelerator peak, when known), and ``backend, device, num_cpus,
        python, versions``.

    Raises:
        ValueError: For an unknown scale, block or precision, no scales, blocks or precisions,
            both ``blocks`` and a ``block`` option (or ``precisions`` and ``precision``), or a
            non-positive setting.
    """
    rows = []
    for scale, each in plan(scales, blocks=blocks, precisions=precisions, quick=quick,
                            **options):  # all checked before the first
        logger.info("benchmarking %s %s in %s (width %g)", scale, each.variant, each.precision, each.width)
        row = _isolated(scale, each) if isolate else benchmark_scale(scale, each)
        logger.info("%s %s %s: train %.1f segments/s, inference %.1f segments/s", scale, each.variant, each.precision,
                    row["train_segments_per_sec"], row["infer_segments_per_sec"])
        rows.append(row)
    return rows


_COLUMNS = (
    ("scale", "scale", "{}"),
    ("variant", "variant", "{}"),
    ("precision", "precision", "{}"),
    ("input", "input_length", "{:d}"),
    ("sec", "segment_sec", "{:.2f}"),
    ("params", "num_params", "{:,d}"),
    ("GMAC/seg", "gmacs_per_segment", "{:.3f}"),
    ("train seg/s", "train_segments_per_sec", "{:.1f}"),
    ("infer seg/s", "infer_segments_per_sec", "{:.1f}"),
    ("train RTF", "train_realtime_factor", "{:.1f}"),
    ("infer RTF", "infer_realtime_factor", "{:.1f}"),
    ("train GFLOP/s", "train_gflops", "{:.1f}"),
    ("infer GFLOP/s", "infer_gflops", "{:.1f}"),
    ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of ``run_benchmark`` rows, headed by the backend and device."""
    if not rows:
        return "(no results)"
    columns = list(_COLUMNS)
    if any(row.get("peak_device_mb") is not None for row in rows):
        columns.append(("peak device MB", "peak_device_mb", "{:.0f}"))
    cells = [[title for title, _, _ in columns]]
    for row in rows:
        values = [row.get(key) for _, key, _ in columns]
        cells.append([
            "-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)
            for value, (_, _, fmt) in zip(values, columns)
        ])
    lines = measure.lay_out(cells, [fmt == "{}" for _, _, fmt in columns])  # labels left, numbers right
    first = rows[0]
    versions = ", ".join(f"{k} {v}" for k, v in first.get("versions", {}).items())
    head = (f"backend {first.get('backend')} on {first.get('device')}; width {first.get('width')}, "
            f"train batch {first.get('batch_size')}, inference batch {first.get('infer_batch_size')}; "
            f"RTF = audio seconds per wall second at {first.get('sample_rate')} Hz")
    return "\n".join([head, *lines, versions])
