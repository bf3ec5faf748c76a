"""Bad input through the CLI, planted for real: each gets one line naming the file and the reason, exit status 1.

A CSV of random bytes, ``--out`` naming a file, a dataset of one class, audio too short to score (or
empty), random bytes named ``.mp3``; and what the help and the saved files tell a user: a ``--set``
example every command accepts, one name (``default``) for the classifier ``msagg predict`` applies.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import pretrain_runs
from msagg.data.tracklist import TrackList
from msagg.pipeline.cli import main
from msagg.pipeline.config import resolve
from msagg.stages import classify, extract, prepare, pretrain
from prepare_runs import make_prepare_run

SAMPLE_RATE = 1000  # the lowest rate prepare accepts; the tiny models (3^2: 27 samples, 4^2: 64) need no more


def cli(*args):
    """``msagg ARGS``: (exit status, stdout, stderr, the lines of stderr that start with "Error:")."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    return result.exit_code, result.stdout, result.stderr, errors


def one_error(*args) -> str:
    """The one ``Error:`` line of a command that must fail as a user error (exit 1, no traceback)."""
    code, _, err, errors = cli(*args)
    assert code == 1 and "Traceback" not in err and len(errors) == 1, err
    return errors[0]


# --- 5a: a CSV that is no CSV ------------------------------------------------------------------


def test_a_csv_of_random_bytes_is_one_line_naming_it(tmp_path):
    source = tmp_path / "x.csv"
    source.write_bytes(np.random.default_rng(0).bytes(2000))
    error = one_error("prepare", "--dataset", "csv", "--source", source, "--out", tmp_path / "out")
    assert error.startswith(f"Error: csv {source}: not a CSV file: byte 0x") and "not UTF-8 text" in error, error


def test_a_csv_holding_a_nul_byte_is_one_line(tmp_path):
    source = tmp_path / "nul.csv"
    source.write_bytes(b"path,genre\na.wav,x\x00y\n")
    error = one_error("prepare", "--dataset", "csv", "--source", source, "--out", tmp_path / "out")
    assert error == f"Error: csv {source}: not a CSV file: line 2 holds a NUL byte (binary data, not text); " \
                    "give a UTF-8 text file whose header names a path column"


# --- 5b: a file where a folder goes ------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["prepare", "--dataset", "synth-tags", "--preset", "tiny", "--out", "{file}"],
    ["pretrain", "--cache", "{file}", "--out", "{folder}"],
    ["classify", "--features", "f", "--out", "{file}"],
    ["crossval", "--dataset", "folder", "--source", "s", "--out", "{file}"],
])
def test_a_file_where_a_folder_goes_is_one_line_exit_1(tmp_path, args):
    file = tmp_path / "a file"
    file.write_text("x")
    args = [a.format(file=file, folder=tmp_path / "out") for a in args]
    option = args[args.index(str(file)) - 1]
    assert one_error(*args) == f"Error: {file}: is a file, not a folder ({option} takes a folder)"


def test_a_folder_where_a_file_goes_is_one_line_exit_1(tmp_path):
    error = one_error("classify", "--features", "f", "--out", tmp_path / "out", "--config", tmp_path)
    assert error == f"Error: {tmp_path}: is a folder, not a file (--config takes a file)"


# --- 5c: one class -----------------------------------------------------------------------------


def _class_folder(root, name, seed=0):
    """``root/name/`` with 12 clips of noise: one class of a folder-per-class dataset."""
    (root / name).mkdir(parents=True)
    for i in range(12):
        sf.write(root / name / f"{name}{i}.wav", 0.1 * np.random.default_rng(seed + i).standard_normal(2000),
                 SAMPLE_RATE)
    return root


def test_prepare_of_one_class_warns_in_the_log_and_done(tmp_path, caplog):
    source = _class_folder(tmp_path / "sounds", "dog")
    code, _, err, _ = cli("prepare", "--dataset", "folder", "--source", source, "--sample-rate", SAMPLE_RATE,
                          "--workers", "1", "--out", tmp_path / "out")
    assert code == 0, err
    done = json.loads((tmp_path / "out" / "DONE").read_text())
    expected = ("sounds: the train split holds tracks of 1 class (dog); nothing can be learned from fewer than 2 "
                "classes, and pretrain refuses this cache")
    assert done["warnings"] == [expected]
    assert ("msagg.data.adapters.common", 30, expected) in caplog.record_tuples


def test_prepare_of_a_csv_of_one_genre_warns(tmp_path, caplog):
    rows = ["path,genre"]
    for i in range(10):
        sf.write(tmp_path / f"s{i}.wav", 0.1 * np.random.default_rng(i).standard_normal(2000), SAMPLE_RATE)
        rows.append(f"s{i}.wav,rock")
    (tmp_path / "one.csv").write_text("\n".join(rows) + "\n")
    code, _, err, _ = cli("prepare", "--dataset", "csv", "--source", tmp_path / "one.csv", "--sample-rate",
                          SAMPLE_RATE, "--workers", "1", "--out", tmp_path / "out")
    assert code == 0, err
    warnings = json.loads((tmp_path / "out" / "DONE").read_text())["warnings"]
    assert warnings[0].startswith("one: the train split holds tracks of 1 class (rock)")
    assert any(r.levelname == "WARNING" and "1 class (rock)" in r.getMessage() for r in caplog.records)


def test_prepare_of_two_classes_has_no_warnings(tmp_path):
    source = _class_folder(_class_folder(tmp_path / "sounds", "dog"), "cat", seed=50)
    code, _, err, _ = cli("prepare", "--dataset", "folder", "--source", source, "--sample-rate", SAMPLE_RATE,
                          "--workers", "1", "--out", tmp_path / "out")
    assert code == 0, err
    assert "warnings" not in json.loads((tmp_path / "out" / "DONE").read_text())


# --- 5d, 5e: audio that cannot be scored -------------------------------------------------------


def _cache(folder, *, task="classes", num_tracks=30):
    """A prepare run of ``num_tracks`` sines at SAMPLE_RATE, three classes (or tags) carried by frequency."""
    rng = np.random.default_rng(0)
    classes = np.arange(num_tracks) % 3
    labels = np.eye(3, dtype=np.uint8)[classes] if task == "classes" else (rng.random((num_tracks, 3)) < .5)
    waves = [0.5 * np.sin(2 * np.pi * (50 + 100 * c) / SAMPLE_RATE * np.arange(300)) + 0.05 * rng.standard_normal(300)
             for c in classes]
    tracks = TrackList(name="toy", task=task, label_names=["low", "mid", "high"],
                       track_ids=[f"t{i:02d}" for i in range(num_tracks)], sources=[f"toy:{i}" for i in range(num_tracks)],
                       labels=np.asarray(labels, dtype=np.uint8), split=(["train"] * 3 + ["valid", "test"]) * (num_tracks // 5))
    return make_prepare_run(folder, tracks, waves, sample_rate=SAMPLE_RATE)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """prepare (written), pretrain (untrained tiny models), extract and classify (real) of one toy dataset."""
    root = tmp_path_factory.mktemp("chain")
    cache = _cache(root / "prepare")
    runs = pretrain_runs.make_pretrain(root / "pretrain", cache, sample_rate=SAMPLE_RATE, task="classes",
                                       label_names=("low", "mid", "high"))
    extract.run(extract.Config(pretrain=str(runs), cache=str(cache), scales=("3^2",), classic=()), root / "extract",
                batch_size=8, progress=False)  # the classifier reads 3^2 only
    classify.run(classify.Config(features=str(root / "extract"), classifiers=("logreg",), include_single=False,
                                 tsne=False, feature_sets=("3^2@-1",), predictor_set="all"),
                 root / "classify", progress=False)
    return root


@pytest.fixture()
def audio(tmp_path):
    """A good clip, one too short for the 4^2 model's 64 samples, one of 0 frames, one of 0 bytes, garbage .mp3."""
    files = {"good": tmp_path / "good.wav", "short": tmp_path / "short.wav", "frameless": tmp_path / "frameless.wav",
             "empty": tmp_path / "empty.wav", "garbage": tmp_path / "x.mp3"}
    sf.write(files["good"], 0.5 * np.sin(0.3 * np.arange(500)), SAMPLE_RATE)
    sf.write(files["short"], 0.5 * np.sin(0.3 * np.arange(10)), SAMPLE_RATE)
    sf.write(files["frameless"], np.zeros(0), SAMPLE_RATE)
    files["empty"].write_bytes(b"")
    files["garbage"].write_bytes(np.random.default_rng(0).bytes(5000))
    return files


@pytest.mark.parametrize("run", ["pretrain", "classify"])
def test_predict_reports_short_empty_and_garbage_files_one_line_each(chain, audio, run):
    code, out, err, _ = cli("predict", *audio.values(), f"--{run}", chain / run)
    assert code == 1 and "Traceback" not in err, err
    lines = {line.split(": not scored: ")[0]: line for line in err.splitlines() if ": not scored: " in line}
    assert out.startswith(f"{audio['good']}: ") and len(out.splitlines()) == 1  # the good one is still scored
    # 4^2 reads 64 samples: its input is the longest (the classifier's features are 3^2's, 27 samples)
    need = "0.064 s needed (the 4^2 model's input)" if run == "pretrain" else "0.027 s needed (the 3^2 model's input)"
    assert lines[str(audio["short"])] == f"{audio['short']}: not scored: too short to score: 0.01 s long, at least {need}"
    assert lines[str(audio["frameless"])] == f"{audio['frameless']}: not scored: no audio samples (0 frames)"
    assert lines[str(audio["empty"])] == f"{audio['empty']}: not scored: empty file (0 bytes)"
    garbage = lines[str(audio["garbage"])]
    assert garbage.startswith(f"{audio['garbage']}: not scored: cannot decode: corrupt or unsupported audio (")
    assert "does not exist" not in garbage and "not a regular file" not in garbage


def test_predict_json_keeps_the_reason_of_a_short_file(chain, audio):
    code, out, _, _ = cli("predict", audio["short"], audio["good"], "--pretrain", chain / "pretrain", "--json")
    short, good = json.loads(out)
    assert code == 1 and "scores" not in short and short["reason"].startswith("too short to score: 0.01 s long")
    assert short["error"] == f"{audio['short']}: {short['reason']}" and set(good["scores"]) == {"low", "mid", "high"}


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without mp3")
def test_garbage_named_mp3_is_not_called_missing(audio):
    from msagg.data.audio import AudioError, load

    with pytest.raises(AudioError) as info:
        load(audio["garbage"], SAMPLE_RATE)
    assert str(info.value) == (f"{audio['garbage']}: cannot decode: corrupt or unsupported audio (libsndfile found no "
                               "audio stream it can read in this file)")


# --- 5g: a --set example every command takes ---------------------------------------------------


@pytest.mark.parametrize("command, config_cls, required", [
    ("prepare", prepare.Config, {}),
    ("pretrain", pretrain.Config, {"cache": "c"}),
    ("extract", extract.Config, {"pretrain": "p", "cache": "c"}),
    ("classify", classify.Config, {"features": "f"}),
    ("crossval", pretrain.Config, {"cache": "c"}),  # crossval's --set keys are pretrain's
])
def test_every_set_example_in_the_help_is_accepted(command, config_cls, required):
    code, out, _, _ = cli(command, "--help")
    assert code == 0
    text = " ".join(out.split())
    help_of_set = text[text.index("--set KEY=VALUE") + len("--set KEY=VALUE"):]
    help_of_set = help_of_set[:help_of_set.index("Repeatable.")]
    examples = re.findall(r"--set (\S+=\S+?)(?=[ .]|$)", help_of_set)
    assert examples, help_of_set
    resolve(config_cls, options=required, sets=examples)  # raises ConfigError on a key or value it refuses


# --- 5h: one name for the classifier predict applies -------------------------------------------


def test_predict_applies_the_classifier_index_json_and_results_md_call_default(chain, audio):
    index = json.loads((chain / "classify" / "models" / "index.json").read_text())
    metrics = json.loads((chain / "classify" / "metrics.json").read_text())
    assert index["default"] == metrics["predictor_default"]["feature_set"] == index["all_scales"] and "best" not in index
    assert index["chosen"] == metrics["chosen"]["feature_set"]
    results = (chain / "classify" / "results.md").read_text()
    assert (f"`msagg predict --classify` applies the default classifier (Logistic regression): **{index['default']}** "
            "(the all-scales set, `--predictor-set all`; `models/index.json` \"default\")") in results
    code, out, _, _ = cli("predict", audio["good"], "--classify", chain / "classify", "--json")
    assert code == 0 and json.loads(out)[0]["feature_set"] == index["default"]
    _, help_text, _, _ = cli("predict", "--help")
    help_text = " ".join(help_text.split())
    assert "best classifier" not in help_text and "default classifier (models/index.json's \"default\"" in help_text
