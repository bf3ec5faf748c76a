"""The features file: pooling golden values, layout, resumable writing, schema refusal."""

import dataclasses
import json

import h5py
import numpy as np
import pytest

from msagg.data.formats import features as F
from msagg.data.formats import features_writer as FW

TAP = np.array(
    [
        [[1.0, -1.0], [3.0, 0.0], [2.0, 5.0]],  # segment 0: max over time -> [3, 5]
        [[0.0, 2.0], [-4.0, 1.0], [1.0, 1.0]],  # segment 1: max over time -> [1, 2]
    ],
    dtype=np.float32,
)


def test_pool_time_is_max_over_time_per_segment():
    np.testing.assert_array_equal(F.pool_time(TAP), [[3.0, 5.0], [1.0, 2.0]])
    assert F.pool_time(TAP).dtype == np.float32


@pytest.mark.parametrize(
    "song_pool, expected",
    [("mean", [2.0, 3.5]), ("max", [3.0, 5.0]), ("meanmax", [2.0, 3.5, 3.0, 5.0])],
)
def test_pool_song_golden(song_pool, expected):
    out = F.pool_song(F.pool_time(TAP), song_pool)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32
    assert F.pooled_dim(2, song_pool) == len(expected)


def test_pool_song_single_segment_and_bad_pool():
    np.testing.assert_array_equal(F.pool_song(np.array([[1.0, 2.0]]), "mean"), [1.0, 2.0])
    with pytest.raises(ValueError, match="song_pool"):
        F.pool_song(np.ones((2, 2)), "median")
    with pytest.raises(ValueError, match="num_segments"):
        F.pool_song(np.ones((0, 2)), "mean")


SCALES = {
    "3^2": FW.ScaleInfo(input_length=27, sample_rate=800, model_hash="a" * 64, num_params=123,
                       dims={"-3": 4, "-2": 5, "-1": 6}),
    "4^2": FW.ScaleInfo(input_length=64, sample_rate=800, model_hash="b" * 64, num_params=456,
                       dims={"-3": 2, "-2": 3, "-1": 3}),
}


def _writer(path, config_hash="abc123", scales=SCALES):
    return FW.FeaturesWriter(
        path,
        track_ids=["t0", "t1", "t2", "t3", "t4"],
        labels=np.eye(5, 3, dtype=np.uint8),
        label_names=["a", "b", "c"],
        split=["train", "train", "valid", "test", "test"],
        task="classes",
        dataset="toy",
        pretrain_dataset="toy-pre",
        song_pool="mean",
        config_hash=config_hash,
        scales=scales,
    )


def _block(rows, offset=0.0):
    feats = {s: {t: np.arange(len(rows) * d, dtype=np.float32).reshape(len(rows), d) + offset + rows[0]
                 for t, d in info.dims.items()} for s, info in SCALES.items()}
    counts = {s: np.array(rows, dtype=np.int32) + 1 for s in SCALES}
    return feats, counts


def test_layout_every_dataset_and_attribute(tmp_path):
    path = tmp_path / "features.h5"
    with _writer(path) as w:
        w.write(*_block([0, 1]))
        w.write(*_block([2, 3, 4]))
        assert w.nonfinite_rows().size == 0
        assert w.finalize() == path
    assert not (tmp_path / "features.h5.partial").exists()
    with h5py.File(path, "r") as h5:
        attrs = dict(h5.attrs)
        assert attrs["schema_version"] == 1
        assert {"config_hash", "song_pool", "dataset", "pretrain_dataset", "task", "complete", "num_done"} <= set(attrs)
        keys = ("config_hash", "song_pool", "dataset", "pretrain_dataset", "task")
        assert tuple(attrs[k] for k in keys) == ("abc123", "mean", "toy", "toy-pre", "classes")
        assert bool(attrs["complete"]) and attrs["num_done"] == 5
        assert set(h5) == {"track_ids", "labels", "label_names", "split", "features", "num_segments"}
        assert h5["labels"].dtype == np.uint8 and h5["labels"].shape == (5, 3)
        for name, n in (("track_ids", 5), ("label_names", 3), ("split", 5)):
            assert h5[name].shape == (n,) and h5.get(name).dtype.kind == "O"  # variable-length str
        assert list(h5["split"].asstr()[...]) == ["train", "train", "valid", "test", "test"]
        assert set(h5["features"]) == {"3^2", "4^2"}
        for scale, info in SCALES.items():
            group = h5["features"][scale]
            assert dict(group.attrs) == {"input_length": info.input_length, "sample_rate": 800,
                                         "model_hash": info.model_hash, "num_params": info.num_params,
                                         "block": "basic", "multi": False, "tap_layers": "{}"}
            for tap, dim in info.dims.items():
                assert group[tap].dtype == np.float32 and group[tap].shape == (5, dim)
            assert h5["num_segments"][scale].dtype == np.int32
            np.testing.assert_array_equal(h5["num_segments"][scale][...], [1, 2, 3, 4, 5])

    with F.FeaturesFile(tmp_path) as ff:  # a run folder works too
        assert ff.scales == ["3^2", "4^2"]
        assert ff.taps("3^2") == ["-3", "-2", "-1"]
        assert ff.task == "classes" and ff.dataset == "toy" and ff.pretrain_dataset == "toy-pre"
        assert list(ff.track_ids) == ["t0", "t1", "t2", "t3", "t4"] and ff.label_names == ["a", "b", "c"]
        np.testing.assert_array_equal(ff.indices("test"), [3, 4])
        got = ff.get("3^2", "-1")
        assert got.dtype == np.float32 and got.shape == (5, 6)
        np.testing.assert_array_equal(got[2:], np.arange(18, dtype=np.float32).reshape(3, 6) + 2)
        assert ff.scale_attrs("4^2")["input_length"] == 64
        assert ff.attrs["schema_version"] == 1
        with pytest.raises(F.FeaturesError, match="no scale '5\\^5'"):
            ff.get("5^5", "-1")


def test_unknown_schema_version_refused(tmp_path):
    path = tmp_path / "features.h5"
    with _writer(path) as w:
        w.write(*_block([0, 1, 2, 3, 4]))
        w.finalize()
    with h5py.File(path, "r+") as h5:
        h5.attrs["schema_version"] = 7
    with pytest.raises(F.FeaturesError, match=r"features\.h5: features schema version 7 is not supported"):
        F.FeaturesFile(path)


def test_missing_and_unfinished_files_refused(tmp_path):
    with pytest.raises(F.FeaturesError, match="no features file"):
        F.FeaturesFile(tmp_path / "nothing.h5")
    w = _writer(tmp_path / "features.h5")
    w.write(*_block([0, 1]))
    with pytest.raises(F.FeaturesError, match="only 2 of 5"):
        w.finalize()
    w.close()
    with pytest.raises(F.FeaturesError, match="unfinished"):
        F.FeaturesFile(tmp_path / "features.h5.partial")
    assert F.FeaturesFile(tmp_path / "features.h5.partial", allow_partial=True).num_tracks == 5


def test_writer_resumes_same_inputs_and_restarts_other_config(tmp_path):
    path = tmp_path / "features.h5"
    w = _writer(path)
    w.write(*_block([0, 1]))
    w.close()
    w = _writer(path)
    assert w.num_done == 2  # resumed
    w.write(*_block([2, 3, 4]))
    w.close()
    w = _writer(path, config_hash="other")
    assert w.num_done == 0  # another config: started afresh
    feats, counts = _block([0, 1])
    feats["3^2"]["-2"] = np.zeros((2, 4), np.float32)  # dim 5 expected
    with pytest.raises(F.FeaturesError, match=r"3\^2/-2: expected \(2, 5\), got \(2, 4\)"):
        w.write(feats, counts)
    assert w.num_done == 0
    w.close()


def test_nonfinite_rows_found(tmp_path):
    feats, counts = _block([0, 1, 2, 3, 4])
    feats["4^2"]["-2"][3, 1] = np.nan
    with _writer(tmp_path / "features.h5") as w:
        w.write(feats, counts)
        np.testing.assert_array_equal(w.nonfinite_rows(), [3])


def test_model_variant_attributes_and_files_without_them(tmp_path):
    taps = {"-3": "block1_pool", "-2": "block2_pool", "-1": "relu1x1"}
    scales = {"3^2": dataclasses.replace(SCALES["3^2"], block="se", multi=True, tap_layers=taps),
              "4^2": SCALES["4^2"]}
    path = tmp_path / "features.h5"
    with _writer(path, scales=scales) as w:
        w.write(*_block([0, 1, 2, 3, 4]))
        w.finalize()
    with h5py.File(path, "r") as h5:
        attrs = h5["features"]["3^2"].attrs
        assert attrs["block"] == "se" and bool(attrs["multi"]) and json.loads(attrs["tap_layers"]) == taps
    with F.FeaturesFile(path) as ff:
        assert ff.variant("3^2") == {"block": "se", "multi": True, "tap_layers": taps}
        assert ff.variant("4^2") == {"block": "basic", "multi": False, "tap_layers": {}}
    with h5py.File(path, "r+") as h5:  # a file written before these attributes existed
        for key in ("block", "multi", "tap_layers"):
            del h5["features"]["3^2"].attrs[key]
    with F.FeaturesFile(path) as ff:
        assert ff.variant("3^2") == {"block": "basic", "multi": False, "tap_layers": {}}
        assert ff.scale_attrs("3^2")["input_length"] == 27


def _finished(path):
    with _writer(path) as w:
        w.write(*_block([0, 1, 2, 3, 4]))
        w.finalize()
    return path


def test_numeric_datasets_carry_checksums(tmp_path):
    path = _finished(tmp_path / "features.h5")
    with h5py.File(path, "r") as h5:
        assert h5["labels"].fletcher32 and not h5["track_ids"].fletcher32  # strings take no filter
        assert all(h5["features"][s][t].fletcher32 for s in SCALES for t in SCALES[s].dims)
        assert all(h5["num_segments"][s].fletcher32 for s in SCALES)
    with F.FeaturesFile(path) as ff:
        assert ff.checksummed


def test_file_written_before_checksums_still_reads(tmp_path):
    path = _finished(tmp_path / "features.h5")
    with h5py.File(path, "r+") as h5:
        for name in ["labels"] + [f"features/{s}/{t}" for s in SCALES for t in SCALES[s].dims]:
            data = h5[name][...]
            del h5[name]
            h5.create_dataset(name, data=data)
    with F.FeaturesFile(path) as ff:
        assert not ff.checksummed
        np.testing.assert_array_equal(ff.get("3^2", "-1"), _block([0, 1, 2, 3, 4])[0]["3^2"]["-1"])


def test_schema_version_string_is_refused_saying_so(tmp_path):
    """A string "1" is refused (msagg writes the integer 1); the message shows the value and type."""
    path = _finished(tmp_path / "features.h5")
    with h5py.File(path, "r+") as h5:
        h5.attrs["schema_version"] = "1"
    with pytest.raises(F.FeaturesError, match=r"features\.h5: features schema_version '1' \(a str\) is not supported "
                                              r"\(this msagg reads schema version 1, an integer\)"):
        F.FeaturesFile(path)


def test_resume_checks_the_rows_already_written(tmp_path, caplog):
    """A partial file whose rows below num_done fail their checksum is started afresh, not trusted."""
    path = tmp_path / "features.h5"
    w = _writer(path)
    w.write(*_block([0, 1, 2]))
    w.close()
    partial = tmp_path / "features.h5.partial"
    with h5py.File(partial, "r") as h5:
        info = h5["features"]["4^2"]["-2"].id.get_chunk_info(0)
    with open(partial, "r+b") as fh:
        fh.seek(info.byte_offset + 4)
        fh.write(b"\x7f" * 8)
    with caplog.at_level("WARNING"):
        w = _writer(path)
    assert w.num_done == 0
    assert "rows written before are damaged (/features/4^2/-2 fail their Fletcher-32 checksum)" in caplog.text
    w.close()


def test_a_finished_file_of_the_same_inputs_is_taken_as_it_is(tmp_path):
    """A run that failed after finalize (e.g. writing DONE) finds its features.h5 and writes nothing."""
    path = _finished(tmp_path / "features.h5")
    before = path.read_bytes()
    with _writer(path) as w:
        assert w.finished and w.num_done == 5 and w.nonfinite_rows().size == 0
        assert w.finalize() == path
    assert path.read_bytes() == before
    with _writer(path, config_hash="other") as w:  # other inputs: written again
        assert not w.finished and w.num_done == 0


def test_writer_refuses_writes_after_close(tmp_path):
    w = _writer(tmp_path / "features.h5")
    w.close()
    w.close()
    with pytest.raises(F.FeaturesError, match="closed"):
        w.write(*_block([0]))
