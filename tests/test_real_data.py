"""Real audio through every stage: small subsets of ESC-10 and FSDD from ../shared (skipped where absent)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from msagg.pipeline import protocols
from msagg.pipeline.config import resolve
from msagg.stages import pretrain

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
ESC10 = SHARED / "esc10"
FSDD = SHARED / "fsdd" / "recordings"


def _run_chain(root: Path, prepare_options: dict) -> dict:
    # The tiny preset with a real-sized scale (4^6, 16384 samples = 0.74 s at 22050 Hz) so that
    # features see whole sounds, at a width small enough for seconds on 2 cores.
    return protocols.run_fold(
        root,
        prepare_options=prepare_options,
        preset="tiny",
        pretrain_sets=("scales=4^6,5^5", "width=0.0625", "steps_per_epoch=6", "batch_size=8"),
        classify_options={"classifiers": ("logreg",)},
        workers=1,
    )


@pytest.mark.skipif(not ESC10.is_dir(), reason="../shared/datasets/esc10 is not present")
def test_esc10_subset_through_every_stage(tmp_path):
    src = tmp_path / "esc10"
    classes = ["001 - Dog bark", "002 - Rain", "005 - Clock tick", "007 - Helicopter"]
    for name in classes:
        shutil.copytree(ESC10 / name, src / name)
    metrics = _run_chain(tmp_path / "run", {"dataset": "folder", "source": str(src), "fold_from_name": r"^(\d)-",
                                            "fold": 1})
    assert metrics["task"] == "classes" and metrics["num_tracks"]["test"] == 4 * 8  # fold 1: 8 clips per class
    best = max(e["classifiers"]["logreg"]["test"]["accuracy"]["mean"] for e in metrics["feature_sets"].values())
    assert best > 0.25 + 0.2, f"best accuracy {best:.3f} is not clearly above chance (0.25)"
    for name in ("results.md", "results.csv", "plots/tsne.png"):
        assert (tmp_path / "run" / "classify" / name).is_file()
    assert json.loads((tmp_path / "run" / "prepare" / "DONE").read_text())["num_skipped"] == 0


@pytest.mark.skipif(not FSDD.is_dir(), reason="../shared/datasets/fsdd is not present")
def test_fsdd_subset_through_every_stage(tmp_path):
    src = tmp_path / "recordings"
    src.mkdir()
    for path in FSDD.glob("[0-3]_*_*.wav"):
        index = int(path.stem.split("_")[2])
        if index < 15:  # 0-4 official test, the rest train/valid
            shutil.copy(path, src / path.name)
    metrics = _run_chain(tmp_path / "run", {"dataset": "fsdd", "source": str(src)})
    assert metrics["label_names"] == [str(d) for d in range(10)]  # the adapter keeps all ten digits
    assert metrics["num_tracks"]["test"] == 4 * 6 * 5  # 4 digits x 6 speakers x recordings 0-4
    best = max(e["classifiers"]["logreg"]["test"]["accuracy"]["mean"] for e in metrics["feature_sets"].values())
    assert best > 0.25 + 0.2, f"best accuracy {best:.3f} is not clearly above chance (0.25)"


def test_tiny_preset_overrides_resolve():
    config = resolve(pretrain.Config, presets=pretrain.PRESETS, preset="tiny", options={"cache": "x"},
                     sets=("scales=4^6,5^5", "width=0.0625"))
    assert config.scales == ("4^6", "5^5") and config.width == 0.0625
