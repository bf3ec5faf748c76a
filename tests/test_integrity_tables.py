"""The text tables of the cache index and of features.h5 (which HDF5 cannot checksum) against their
recorded sha256: planted edits of the bytes on disk, every table, and files of older msagg without it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import pretrain_runs
from legacy_cache import as_before_text_sha256
from msagg.data.formats import cache_layout
from msagg.data.formats import features as F
from msagg.data.formats.cache import AudioCache, CacheError
from msagg.data.formats.features_writer import FeaturesWriter, ScaleInfo
from msagg.data.integrity import TEXT_SHA256, text_sha256
from msagg.data.tracklist import TrackList
from msagg.stages import extract
from prepare_runs import make_prepare_run

SAMPLE_RATE = 1000
N = 9
SPLIT = ["train", "valid", "test"] * (N // 3)


def tracklist() -> TrackList:
    labels = np.zeros((N, 3), dtype=np.uint8)
    labels[np.arange(N), np.arange(N) % 3] = 1
    return TrackList(name="toy", task="tags", label_names=["low", "mid", "high"],
                     track_ids=[f"t{i:03d}" for i in range(N)], sources=[f"s{i}.wav" for i in range(N)],
                     labels=labels, split=list(SPLIT), skipped=[("gone.wav", "no such file")])


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """Finished prepare, pretrain (one untrained tiny model) and extract runs."""
    root = tmp_path_factory.mktemp("tables")
    rng = np.random.default_rng(0)
    waves = [rng.uniform(-0.9, 0.9, 200 + 10 * i).astype(np.float32) for i in range(N)]
    prepared = make_prepare_run(root / "prepare", tracklist(), waves, sample_rate=SAMPLE_RATE, tracks_per_shard=4)
    pretrain = pretrain_runs.make_pretrain(root / "pretrain", prepared, sample_rate=SAMPLE_RATE, scales=("3^2",))
    extracted = extract.run(extract.Config(pretrain=str(pretrain), cache=str(prepared)), root / "extract",
                            batch_size=4, progress=False)
    return prepared, pretrain, Path(extracted).parent


def valid_to_train(path: Path) -> None:
    """The planted fault: the first bytes ``valid`` in the file overwritten with ``train``."""
    data = path.read_bytes()
    at = data.index(b"valid")
    with open(path, "r+b") as fh:
        fh.seek(at)
        fh.write(b"train")


def moved_into_training(split: list[str]) -> bool:
    """Whether ``split`` is ``SPLIT`` with one validation track moved into training."""
    changed = [(a, b) for a, b in zip(SPLIT, split) if a != b]
    return len(split) == len(SPLIT) and changed == [("valid", "train")]


def plain_split(path: Path) -> list[str]:
    """/split as h5py alone reads it."""
    with h5py.File(path, "r") as f:
        return f["split"].asstr()[()].tolist()


def test_index_split_edited_valid_to_train_is_refused(tmp_path, upstream):
    """Fault: 5 bytes of index.h5 overwritten, ``valid`` -> ``train`` (a validation track moved into training).

    Opening the cache raises one CacheError naming index.h5 and /split; msagg extract stops with
    that line and writes no DONE.
    """
    from msagg.pipeline.cli import main

    prepared, pretrain, _ = upstream
    run = tmp_path / "prepare"
    shutil.copytree(prepared, run)
    index = run / "cache" / "index.h5"
    valid_to_train(index)
    assert moved_into_training(plain_split(index))  # the fault is real
    message = (f"{index}: damaged audio cache: /split does not match the sha256 recorded when it was written; "
               "prepare the dataset again")
    with pytest.raises(CacheError) as err:
        AudioCache(run)
    assert str(err.value) == message
    out = tmp_path / "extract"
    result = CliRunner().invoke(main, ["extract", "--pretrain", str(pretrain), "--cache", str(run), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == f"Error: {message}"
    assert not (out / "DONE").exists()


def test_features_split_edited_valid_to_train_is_refused(tmp_path, upstream):
    """Fault: 5 bytes of features.h5 overwritten, ``valid`` -> ``train``.

    Opening it raises one FeaturesError naming features.h5 and /split; msagg classify stops with
    that line and writes no DONE; extract does not take the damaged file as finished but writes it again.
    """
    from msagg.pipeline.cli import main

    prepared, _, extracted = upstream
    run = tmp_path / "extract"
    shutil.copytree(extracted, run)
    features = run / F.FILE_NAME
    valid_to_train(features)
    assert moved_into_training(plain_split(features))  # the fault is real
    message = (f"{features}: damaged features file: /split does not match the sha256 recorded when it was written; "
               "extract the features again")
    with pytest.raises(F.FeaturesError) as err:
        F.FeaturesFile(run)
    assert str(err.value) == message
    out = tmp_path / "classify"
    result = CliRunner().invoke(main, ["classify", "--features", str(run), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == f"Error: {message}"
    assert not (out / "DONE").exists()

    with h5py.File(extracted / F.FILE_NAME, "r") as h5:  # the same inputs as the finished file
        group = h5["features/3^2"]
        info = ScaleInfo(input_length=int(group.attrs["input_length"]), sample_rate=SAMPLE_RATE,
                         model_hash=str(group.attrs["model_hash"]), num_params=int(group.attrs["num_params"]),
                         dims={tap: group[tap].shape[1] for tap in group})
        inputs = dict(track_ids=h5["track_ids"].asstr()[()].tolist(), labels=h5["labels"][()],
                      label_names=h5["label_names"].asstr()[()].tolist(), split=SPLIT, task="tags", dataset="toy",
                      pretrain_dataset=str(h5.attrs["pretrain_dataset"]), song_pool=str(h5.attrs["song_pool"]),
                      config_hash=str(h5.attrs["config_hash"]), scales={"3^2": info},
                      classic={name: h5["classic"][name].shape[1] for name in h5.get("classic", {})})
    with FeaturesWriter(extracted / F.FILE_NAME, **inputs) as intact:
        assert intact.finished
    with FeaturesWriter(features, **inputs) as writer:
        assert not writer.finished and writer.num_done == 0  # started afresh
        assert plain_split(writer.partial) == SPLIT


@pytest.mark.parametrize("table", cache_layout.TEXT_TABLES)
def test_every_text_table_of_the_index_is_covered(tmp_path, upstream, table):
    """Fault: one value of one text table rewritten through HDF5 (the recorded sha256 left as it was)."""
    prepared, _, _ = upstream
    index = tmp_path / "cache" / "index.h5"
    shutil.copytree(prepared / "cache", index.parent)
    with h5py.File(index, "a") as f:
        values = f[table].asstr()[()]
        values.flat[0] = values.flat[0] + "x"
        del f[table]
        f.create_dataset(table, data=values.tolist(), dtype=h5py.string_dtype("utf-8"))
    with pytest.raises(CacheError) as err:
        AudioCache(index)
    assert str(err.value) == (f"{index}: damaged audio cache: /{table} does not match the sha256 recorded when it "
                              "was written; prepare the dataset again")


@pytest.mark.parametrize("table", F.TEXT_TABLES)
def test_every_text_table_of_the_features_file_is_covered(tmp_path, upstream, table):
    """Fault: one value of one text table of features.h5 rewritten through HDF5."""
    _, _, extracted = upstream
    path = tmp_path / F.FILE_NAME
    shutil.copy(extracted / F.FILE_NAME, path)
    with h5py.File(path, "a") as f:
        values = f[table].asstr()[()].tolist()
        values[-1] += "x"
        del f[table]
        f.create_dataset(table, data=values, dtype=h5py.string_dtype("utf-8"))
    with pytest.raises(F.FeaturesError, match=rf"features\.h5: damaged features file: /{table} does not match the "
                                              r"sha256 recorded when it was written; extract the features again$"):
        F.FeaturesFile(path)


def test_a_damaged_record_is_named(tmp_path, upstream):
    """Fault: the attribute holding the digests overwritten with text that is not JSON."""
    prepared, _, _ = upstream
    index = tmp_path / "cache" / "index.h5"
    shutil.copytree(prepared / "cache", index.parent)
    with h5py.File(index, "a") as f:
        f.attrs[TEXT_SHA256] = "{broken"
    with pytest.raises(CacheError, match=r"index\.h5: damaged audio cache: attribute text_sha256 is damaged \(not the "
                                         r"JSON object msagg writes\)"):
        AudioCache(index)


def test_recorded_digests_are_of_the_tables_as_json(upstream):
    """The recorded values: sha256 of each table as compact ASCII JSON (golden for /split)."""
    prepared, _, extracted = upstream
    golden = "4b63083b0014f1031ad4363978d3b3e8f0447b207a80dba89ff249e42782143a"  # sha256 of b'["train","valid","test",...]', the split of 9 tracks
    for path, tables in ((prepared / "cache" / "index.h5", cache_layout.TEXT_TABLES),
                         (extracted / F.FILE_NAME, F.TEXT_TABLES)):
        with h5py.File(path, "r") as f:
            recorded = json.loads(f.attrs[TEXT_SHA256])
            assert sorted(recorded) == sorted(tables)
            assert all(recorded[name] == text_sha256(f[name].asstr()[()]) for name in tables)
            assert recorded["split"] == golden


def test_files_of_an_older_msagg_without_the_record_read_as_before(tmp_path, upstream):
    """No fault: an index and a features file without ``text_sha256`` (msagg before it) read unverified."""
    prepared, _, extracted = upstream
    shutil.copytree(prepared, tmp_path / "prepare")
    as_before_text_sha256(tmp_path / "prepare" / "cache" / "index.h5")
    with AudioCache(tmp_path / "prepare") as cache:
        assert cache.split.tolist() == SPLIT and cache.skipped == [("gone.wav", "no such file")]
        assert cache.track(8).shape == (280,)
    shutil.copy(extracted / F.FILE_NAME, tmp_path / F.FILE_NAME)
    with h5py.File(tmp_path / F.FILE_NAME, "a") as f:
        del f.attrs[TEXT_SHA256]
    with F.FeaturesFile(tmp_path / F.FILE_NAME) as ff:
        assert ff.split.tolist() == SPLIT and ff.track_ids.tolist() == [f"t{i:03d}" for i in range(N)]
