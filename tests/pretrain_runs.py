"""Finished pretrain run folders for tests, built through the writer side of msagg.stages.runs.pretrain_run."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import keras

from msagg.models import sample_cnn, specs
from msagg.stages import pretrain as pretrain_stage
from msagg.stages.runs.pretrain_run import MODEL_FILE, mark_scale_done, save_model, scale_dir, write_scale_metrics
from msagg.stages.runs.folder import RunFolder


def make_pretrain(
    folder: Path,
    cache_dir: Path,
    *,
    scales: Sequence[str] = ("3^2", "4^2"),
    sample_rate: int = 800,
    task: str = "tags",
    label_names: Sequence[str] = ("low", "mid", "high"),
    width: float = 0.05,
    models: bool = True,
    test_metrics: Mapping | None = None,
    seed: int = 1,
) -> Path:
    """A finished pretrain run with untrained models (or, with ``models=False``, only metrics.json).

    Args:
        folder: The run folder to create.
        cache_dir: The prepare run the config names (it need not exist when nothing reads it).
        scales: Scales to write.
        sample_rate: Recorded in each metrics.json.
        task, label_names: Of the models' outputs.
        width: Width multiplier of the models.
        models: Write each scale's model.keras (False: a run whose models are gone).
        test_metrics: The end-to-end test metrics recorded per scale.
        seed: Keras seed of the weights.
    """
    config = pretrain_stage.Config(cache=str(cache_dir), scales=tuple(scales), width=width)
    run = RunFolder(folder, "pretrain", config, upstream={"cache": cache_dir})
    run.start()
    keras.utils.set_random_seed(seed)
    for scale in scales:
        where = scale_dir(folder, scale)
        num_params = None
        if models:
            model = sample_cnn.build_sample_cnn(scale, len(label_names), task, width=width)
            save_model(where / MODEL_FILE, model)
            num_params = int(model.count_params())
        write_scale_metrics(where, {
            "scale": scale, "input_length": specs.get_spec(scale).input_length, "sample_rate": sample_rate,
            "task": task, "label_names": list(label_names), "width": width, "num_params": num_params,
            "test": dict(test_metrics or {}),
        })
        mark_scale_done(where, {"scale": scale})
    run.finish({"scales": list(scales)})
    return folder
