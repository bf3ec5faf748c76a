"""What --overwrite may replace: only a run of the same stage, never another stage's run nor a run this one reads.

Each test plants the folder for real (a finished extract run, a folder a failed run left, a run
folder holding its own upstream run) and checks the one line the user sees and that nothing in
the folder changed.
"""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from msagg.pipeline.cli import main
from msagg.stages import prepare, pretrain
from msagg.stages.runs.folder import RunConflictError, RunFolder
from msagg.stages.runs.upstream import open_upstream
from test_classify import write_features
from test_faults_lock import one_line_error, snapshot, tiny_prepare_config

TINY_PREPARE = ["--num-tracks", "8", "--min-sec", "1", "--max-sec", "1.5", "--sample-rate", "4000", "--workers", "1"]


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def extract_run(tmp_path):
    """A finished extract run folder (features.h5, config.json, metadata.json, DONE)."""
    out, _, _ = write_features(tmp_path, "classes", counts=(12, 6, 6))
    return out


def test_classify_into_the_extract_run_it_reads_is_refused_with_or_without_overwrite(extract_run):
    """Fault (the probe's): `msagg classify --features X --out X [--overwrite]`, X an extract run."""
    before = snapshot(extract_run)
    for flags in ([], ["--overwrite"]):
        result = _invoke("classify", "--features", extract_run, "--classifier", "logreg", "--out", extract_run, *flags)
        assert result.exit_code == 1, result.output
        assert one_line_error(result) == (
            f"Error: {extract_run}: holds an extract run, not a classify run; --overwrite replaces only a classify "
            "run: choose another output folder (--out) for classify")
        assert "Traceback" not in result.output
        assert snapshot(extract_run) == before
    assert open_upstream(extract_run, "extract").file.is_file()


@pytest.mark.parametrize("stage", ["prepare", "pretrain"])
def test_no_flag_lets_a_stage_replace_another_stages_run(tmp_path, extract_run, stage):
    """Fault: --out names a finished run of another stage (here an extract run), with --overwrite."""
    cache = tmp_path / "cache"
    if stage == "pretrain":  # a real upstream run: nothing else stops pretrain before it would write
        prepare.run(tiny_prepare_config(), cache, workers=1, progress=False)
    before = snapshot(extract_run)
    args = {"prepare": ["prepare", *TINY_PREPARE],
            "pretrain": ["pretrain", "--cache", cache, "--preset", "tiny"]}[stage]
    result = _invoke(*args, "--overwrite", "--out", extract_run)
    assert result.exit_code == 1, result.output
    assert one_line_error(result) == (
        f"Error: {extract_run}: holds an extract run, not a {stage} run; --overwrite replaces only a {stage} run: "
        f"choose another output folder (--out) for {stage}")
    assert snapshot(extract_run) == before


def test_a_folder_holding_the_run_it_reads_is_refused_even_without_its_metadata(extract_run):
    """Fault: classify --out on its own upstream extract run of an older msagg (no metadata.json to name
    its stage): --overwrite would have deleted features.h5 while classify read it."""
    (extract_run / "metadata.json").unlink()
    before = snapshot(extract_run)
    result = _invoke("classify", "--features", extract_run, "--classifier", "logreg", "--out", extract_run,
                     "--overwrite")
    assert result.exit_code == 1, result.output
    assert one_line_error(result) == (
        f"Error: {extract_run}: holds the extract run this classify run reads (features); writing there would "
        "destroy it, whatever the flags: choose another output folder (--out) for classify")
    assert snapshot(extract_run) == before


def test_a_folder_around_the_run_it_reads_is_refused(tmp_path):
    """Fault: --out a folder that holds the upstream run below it (runs/x holding runs/x/prep), with
    another config there: --overwrite would have emptied it, upstream included."""
    out = tmp_path / "x"
    cache = out / "prep"
    prepare.run(tiny_prepare_config(), cache, workers=1, progress=False)
    with RunFolder(out, "pretrain", pretrain.Config(cache=str(cache), seed=5)) as earlier:  # a pretrain run there
        earlier.start()
    before = snapshot(out)
    folder = RunFolder(out, "pretrain", pretrain.Config(cache=str(cache)))
    with folder:
        with pytest.raises(RunConflictError) as err:
            folder.start(overwrite=True, upstream={"cache": open_upstream(cache, "prepare")})
    assert str(err.value) == (
        f"{out}: holds {cache}, the prepare run this pretrain run reads (cache); writing there would destroy it, "
        "whatever the flags: choose another output folder (--out) for pretrain")
    assert snapshot(out) == before


def test_another_config_of_a_finished_run_says_what_the_folder_holds(tmp_path):
    """Fault: a finished prepare run folder given to prepare with another config."""
    out = tmp_path / "prep"
    assert _invoke("prepare", *TINY_PREPARE, "--out", out).exit_code == 0
    before = snapshot(out)
    result = _invoke("prepare", *TINY_PREPARE, "--seed", "3", "--out", out)
    assert result.exit_code == 1
    line = one_line_error(result)
    assert re.fullmatch(rf"Error: {re.escape(str(out))}: holds a finished prepare run with another config \(hash "
                        r"[0-9a-f]{12}, this one [0-9a-f]{12}\); choose another output folder, or pass --overwrite "
                        r"to replace it", line), line
    assert snapshot(out) == before


def test_a_folder_a_failed_run_left_says_it_did_not_finish(tmp_path):
    """Fault: a prepare run that failed (no file could be decoded) left its folder; the corrected command
    (another source) names the same folder."""
    import soundfile as sf
    import numpy as np

    bad, good = tmp_path / "bad", tmp_path / "good"
    for root in (bad, good):
        for label in ("a", "b"):
            (root / label).mkdir(parents=True)
            for i in range(3):
                path = root / label / f"t{i}.wav"
                if root == bad:
                    path.write_text("not audio")
                else:
                    sf.write(path, 0.1 * np.sin(np.arange(2000) * (0.1 + 0.05 * i)).astype(np.float32), 4000)
    out = tmp_path / "prep"
    common = ["prepare", "--dataset", "folder", "--sample-rate", "4000", "--workers", "1", "--out", out]
    failed = _invoke(*common, "--source", bad)
    assert failed.exit_code == 1 and "none of the 6 tracks could be decoded" in failed.output
    assert (out / "config.json").is_file() and not (out / "DONE").exists()
    before = snapshot(out)
    result = _invoke(*common, "--source", good)
    assert result.exit_code == 1
    line = one_line_error(result)
    assert re.fullmatch(rf"Error: {re.escape(str(out))}: holds a prepare run with another config that did not "
                        r"finish \(no DONE; hash [0-9a-f]{12}, this one [0-9a-f]{12}\); pass --overwrite to replace "
                        r"it, or choose another output folder", line), line
    assert snapshot(out) == before
    result = _invoke(*common, "--source", good, "--overwrite")
    assert result.exit_code == 0, result.output
    assert open_upstream(out, "prepare").done["num_tracks"] == 6
