"""PretrainRun: the one reader of a pretrain run folder, and its writer functions."""

import hashlib
import json

import numpy as np
import pytest

import pretrain_runs
from msagg.data.formats.cache_writer import write_cache
from msagg.data.tracklist import TrackList
from msagg.stages import pretrain as pretrain_stage
from msagg.stages.runs.pretrain_run import (PretrainRun, PretrainRunError, mark_scale_done, pretrain_dir_of, save_model,
                                 write_scale_metrics)
from msagg.stages.runs.folder import RunFolder


def _cache(folder, dataset="toy-set", sample_rate=800):
    tracks = TrackList(name=dataset, task="tags", label_names=["a", "b"], track_ids=["t0", "t1"],
                       sources=["synth:0:0:2", "synth:0:1:2"], labels=np.array([[1, 0], [0, 1]], np.uint8),
                       split=["train", "test"])
    folder.mkdir(parents=True)
    write_cache(folder / "cache", tracks, [np.zeros(100), np.ones(50) * 0.1], sample_rate=sample_rate)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain_run")
    cache = _cache(root / "prepare")
    return pretrain_runs.make_pretrain(root / "pretrain", cache, scales=("4^2", "3^2"), label_names=("a", "b"),
                                       test_metrics={"roc_auc": 0.6})


def test_reads_what_the_writers_wrote(run_dir):
    run = PretrainRun(run_dir)
    assert run.path == run_dir and run.config["scales"] == ["4^2", "3^2"]
    assert run.scales == ["3^2", "4^2"]  # ordered by (m, n)
    assert run.select() == ["3^2", "4^2"] and run.select(["4^2"]) == ["4^2"]
    assert run.block == "basic" and run.multi is False and run.width == 0.05
    assert run.metrics("3^2")["test"] == {"roc_auc": 0.6} and run.input_length("4^2") == 64
    assert run.model_path("3^2") == run_dir / "3^2" / "model.keras"
    assert run.model_hash("3^2") == hashlib.sha256((run_dir / "3^2" / "model.keras").read_bytes()).hexdigest()
    assert run.sample_rate == 800 and run.dataset == "toy-set"
    assert (run_dir / "3^2" / "DONE").is_file() and (run_dir / "DONE").is_file()


def test_load_and_tap_extractor(run_dir):
    run = PretrainRun(run_dir)
    model = run.load("3^2")
    assert model.inputs[0].shape[1] == 27 and model.output_shape == (None, 2)
    taps = run.tap_extractor("3^2", model).predict_on_batch(np.zeros((2, 27), np.float32))
    assert {t: tuple(v.shape) for t, v in taps.items()} == {"-3": (2, 3, 6), "-2": (2, 1, 13), "-1": (2, 1, 13)}
    assert run.tap_layers("3^2") == {"-3": "block1_pool", "-2": "block2_pool", "-1": "relu1x1"}


def test_missing_scale_is_refused_naming_what_exists(run_dir):
    with pytest.raises(PretrainRunError, match=r"no model for scale 3\^9; the run has 3\^2, 4\^2"):
        PretrainRun(run_dir).select(["3^9"])


def test_sample_rate_mismatch_names_both_rates_and_the_fix(run_dir):
    run = PretrainRun(run_dir)
    run.check_sample_rate(800, "the audio")
    with pytest.raises(PretrainRunError, match=r"3\^2 at 800 Hz.*than my.wav \(16000 Hz\).*--sample-rate 800"):
        run.check_sample_rate(16000, "my.wav")


def test_unfinished_or_foreign_folders_are_refused(tmp_path):
    config = pretrain_stage.Config(cache=str(tmp_path / "c"), scales=("3^2",))
    folder = RunFolder(tmp_path / "run", "pretrain", config)
    folder.start()
    with pytest.raises(PretrainRunError, match=r"run.*has not finished \(no DONE marker\)"):
        PretrainRun(tmp_path / "run")
    folder.finish()
    with pytest.raises(PretrainRunError, match="no trained models"):
        PretrainRun(tmp_path / "run").select()
    with pytest.raises(PretrainRunError, match="no such pretrain run folder"):
        PretrainRun(tmp_path / "nowhere")
    with pytest.raises(PretrainRunError, match="not a run folder"):
        PretrainRun(tmp_path)
    from msagg.stages import extract

    other = RunFolder(tmp_path / "ext", "extract", extract.Config(pretrain="p", cache="c"))
    other.start()
    other.finish()
    with pytest.raises(PretrainRunError, match="not a pretrain run .it holds a run of the extract stage"):
        PretrainRun(tmp_path / "ext")


def test_corrupt_or_missing_files_name_the_file(tmp_path, run_dir):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "3^2" / "model.keras").write_bytes(b"not a zip file")
    (copy / "4^2" / "metrics.json").write_text("{")
    run = PretrainRun(copy)
    with pytest.raises(PretrainRunError, match=r"3\^2/model\.keras: cannot load the model"):
        run.load("3^2")
    with pytest.raises(PretrainRunError, match=r"4\^2/metrics\.json: not valid JSON"):
        run.metrics("4^2")
    (copy / "4^2" / "metrics.json").unlink()
    with pytest.raises(PretrainRunError, match=r"4\^2/metrics\.json: missing"):
        PretrainRun(copy).metrics("4^2")
    (copy / "3^2" / "model.keras").unlink()
    assert PretrainRun(copy).scales == ["4^2"]
    with pytest.raises(PretrainRunError, match=r"3\^2/model\.keras: no such model file"):
        PretrainRun(copy).load("3^2")


def test_unknown_dataset_and_variant_from_config(tmp_path):
    config = pretrain_stage.Config(cache=str(tmp_path / "gone"), scales=("3^2",))
    folder = RunFolder(tmp_path / "run", "pretrain", config)
    folder.start()
    (tmp_path / "run" / "config.json").write_text(json.dumps({**folder.config_json, "block": "se", "multi": True}))
    folder.finish()
    run = PretrainRun(tmp_path / "run")
    assert run.dataset == "" and run.block == "se" and run.multi is True


def test_writers(tmp_path):
    import keras

    from msagg.models import sample_cnn

    model = sample_cnn.build_sample_cnn("3^2", 2, width=0.05)
    path = save_model(tmp_path / "3^2" / "model.keras", model)
    assert path.is_file() and [p.name for p in (tmp_path / "3^2").iterdir()] == ["model.keras"]  # no temp left
    np.testing.assert_array_equal(keras.saving.load_model(path).get_weights()[0], model.get_weights()[0])
    with pytest.raises(ValueError, match="sample_rate"):
        write_scale_metrics(tmp_path / "3^2", {"input_length": 27})
    assert json.loads(write_scale_metrics(tmp_path / "3^2", {"input_length": 27, "sample_rate": 8}).read_text()) == {
        "input_length": 27, "sample_rate": 8}
    assert mark_scale_done(tmp_path / "3^2", {"scale": "3^2"}).name == "DONE"


def test_pretrain_dir_of_an_extract_run(tmp_path):
    from msagg.stages import extract

    folder = RunFolder(tmp_path / "ext", "extract", extract.Config(pretrain=str(tmp_path / "pre"), cache="c"))
    folder.start()
    assert pretrain_dir_of(tmp_path / "ext") == tmp_path / "pre"
    assert pretrain_dir_of(tmp_path / "ext" / "features.h5") == tmp_path / "pre"
    assert pretrain_dir_of(tmp_path / "nothing") is None
