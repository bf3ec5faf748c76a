"""The steps of the pipeline benchmark (``msagg.stages.bench.pipeline``): each runs in a fresh process.

    prepare       ``msagg.stages.prepare.run`` (the sharded cache); figures from its DONE
    models        once: a pretrain run folder of untrained models, written as the pretrain stage writes one
    crops <scale> ``msagg.stages.training.crops.CropSequence`` batches (no model)
    extract       ``msagg.stages.extract.run`` with those models on the cache

``measured`` runs one and adds its wall time and peak resident memory.
"""

from __future__ import annotations

import resource
import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from msagg.stages.bench.measure import own_peak_rss_mb, rusage_mb, sig
from msagg.stages.runs.upstream import open_upstream

if TYPE_CHECKING:
    from msagg.stages.bench.pipeline import Settings

DATASET = "synth-tags"
"""The corpus every size is generated from."""


def prepare_config(settings: Settings, num_tracks: int):
    """The prepare config of ``num_tracks`` generated tracks of ``settings.track_sec``."""
    from msagg.stages import prepare

    return prepare.Config(dataset=DATASET, num_tracks=num_tracks, min_sec=float(settings.track_sec),
                          max_sec=float(settings.track_sec), seed=settings.seed, sample_rate=settings.sample_rate)


def measured(step: Callable[..., dict], kwargs: dict, workers: bool = False) -> dict:
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
    from msagg.stages import prepare

    prepare.run(prepare_config(settings, num_tracks), out_dir, workers=settings.workers, overwrite=True,
                progress=False)
    done = open_upstream(out_dir, "prepare").done
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
    from msagg.stages import quiet

    quiet.import_backend()
    import keras

    from msagg.data.formats.cache import AudioCache
    from msagg.models import sample_cnn, specs
    from msagg.stages.bench import models as bench
    from msagg.stages import pretrain
    from msagg.stages.runs.pretrain_run import MODEL_FILE, mark_scale_done, save_model, scale_dir, write_scale_metrics
    from msagg.stages.runs.folder import RunFolder

    prepared = open_upstream(cache_dir, "prepare")
    with AudioCache(prepared.file) as cache:
        task, label_names, rate = cache.task, list(cache.label_names), int(cache.sample_rate)
    config = pretrain.Config(cache=str(cache_dir), scales=settings.scales, width=settings.width)
    folder = RunFolder(out_dir, "pretrain", config, upstream={"cache": prepared})
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
    from msagg.stages import quiet

    quiet.import_backend()  # CropSequence is a keras.utils.PyDataset
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
    from msagg.stages import extract

    with AudioCache(cache_dir) as cache:
        audio_sec = cache.total_samples / cache.sample_rate
    config = extract.Config(pretrain=str(pretrain_dir), cache=str(cache_dir), precision=settings.precision,
                            classic=("mfcc",))
    extract.run(config, out_dir, batch_size=settings.extract_batch_size, overwrite=True, progress=False)
    done = open_upstream(out_dir, "extract").done
    seconds = float(done["seconds"])
    return {
        "num_extracted": done["num_tracks"], "scales": done["scales"], "classic": list(config.classic),
        "audio_sec": round(audio_sec, 3), "stage_sec": seconds,
        "tracks_per_sec": sig(done["num_tracks"] / seconds) if seconds > 0 else None,
        "realtime_factor": sig(audio_sec / seconds) if seconds > 0 else None,
    }


