"""msagg.stages.runs.upstream: opening the finished run of another stage, whatever path to it the user gave."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from msagg.data.errors import MsaggError
from msagg.data.tracklist import TrackList
from msagg.stages.runs.folder import RunFolder
from msagg.stages.runs.records import DONE_FILE, config_hash
from msagg.stages.runs.upstream import UnfinishedRunError, Upstream, open_upstream, upstream_folder
from prepare_runs import make_prepare_run


@dataclasses.dataclass(frozen=True)
class _Toy:
    seed: int = 0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tracks = TrackList(name="toy", task="tags", label_names=["a", "b"], track_ids=["t0", "t1"],
                       sources=["synth:0:0:2", "synth:0:1:2"], labels=np.array([[1, 0], [0, 1]], np.uint8),
                       split=["train", "test"])
    return make_prepare_run(tmp_path_factory.mktemp("up") / "prepare", tracks, [np.zeros(100), np.ones(50) * 0.1],
                            sample_rate=8000)


def test_a_prepare_run_opens_the_same_from_its_folder_its_cache_or_its_index(prepared):
    config = json.loads((prepared / "config.json").read_text())
    for given in (prepared, prepared / "cache", prepared / "cache" / "index.h5", str(prepared)):
        run = open_upstream(given, "prepare")
        assert run.stage == "prepare" and run.folder == prepared and upstream_folder(given, "prepare") == prepared
        assert run.file == prepared / "cache" / "index.h5"
        assert dict(run.config) == config and run.config_hash == config_hash(config)
        assert run.done["num_tracks"] == 2 and run.done["config_hash"] == run.config_hash
    with pytest.raises(TypeError):
        run.config["dataset"] = "other"  # read-only


def test_an_extract_run_names_its_features_file(tmp_path):
    folder = tmp_path / "extract"
    RunFolder(folder, "extract", _Toy()).start()
    (folder / DONE_FILE).write_text("not json")  # an older DONE: read as {}
    for given in (folder, folder / "features.h5"):
        run = open_upstream(given, "extract")
        assert (run.folder, run.file, dict(run.done)) == (folder, folder / "features.h5", {})


@pytest.mark.parametrize("case, message", [
    ("missing", r"^{folder}: no such prepare run folder \(run `msagg prepare` first\)$"),
    ("no config", r"^{folder}: not a run folder \(no config.json\)$"),
    ("other stage", r"^{folder}: not a prepare run \(it holds a run of the extract stage\)$"),
    ("unfinished", r"^{folder}: this prepare run has not finished \(no DONE marker\); run `msagg prepare` into it "),
    ("bad config", r"^{folder}/config.json: not valid JSON"),
])
def test_each_refusal_is_one_line_naming_the_folder(tmp_path, case, message):
    folder = tmp_path / "run"
    if case != "missing":
        folder.mkdir()
    if case in ("other stage", "unfinished", "bad config"):
        run = RunFolder(folder, "extract" if case == "other stage" else "prepare", _Toy())
        run.start()
        if case != "unfinished":
            run.finish()
    if case == "bad config":
        (folder / "config.json").write_text("{")
    with pytest.raises(UnfinishedRunError, match=message.format(folder=folder)) as caught:
        open_upstream(folder, "prepare")
    assert "\n" not in str(caught.value)


def test_a_reader_gets_its_own_error_class(tmp_path):
    class ReaderError(MsaggError):
        pass

    with pytest.raises(ReaderError, match="no such classify run folder"):
        open_upstream(tmp_path / "nowhere", "classify", error=ReaderError)


def test_check_file_refuses_another_runs_file_only(prepared):
    run = open_upstream(prepared, "prepare")
    run.check_file(run.file, run.config_hash)
    run.check_file(run.file, "")  # a file of an older msagg records no hash
    with pytest.raises(UnfinishedRunError, match=r"index.h5: written by a run with config hash cafe00000000, but the "
                                                 r"folder's DONE marks a run with config hash " + run.config_hash):
        run.check_file(run.file, "cafe00000000")
    Upstream("prepare", prepared, {}, {}, "x").check_file(run.file, "cafe00000000")  # a DONE without a hash


def test_run_folders_record_an_upstream_run_by_its_folder_and_hash(tmp_path, prepared):
    up = open_upstream(prepared / "cache", "prepare")
    folder = RunFolder(tmp_path / "next", "pretrain", _Toy(), upstream={"cache": up})
    assert folder.start(upstream={"more": prepared / "cache"})
    meta = json.loads((tmp_path / "next" / "metadata.json").read_text())
    assert meta["upstream"] == {"cache": {"path": str(prepared), "config_hash": up.config_hash},
                                "more": {"path": str(prepared / "cache"), "config_hash": None}}
    folder.release()
