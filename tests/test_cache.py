"""data.cache: the HDF5 layout of schema version 1, int16 round trips, crops, refusals."""

import json
import pickle
import re

import h5py
import numpy as np
import pytest

from data.cache import AudioCache, CacheError, to_int16, write_cache
from data.tracklist import TrackList

LENGTHS = [1000, 37, 2500, 400]


def make_tracklist(skipped=(("gone.wav", "no such file"), ("bad.mp3", "cannot decode"))):
    return TrackList(
        name="toy",
        task="tags",
        label_names=["loud", "piano", "drums"],
        track_ids=["t0", "t1", "t2", "t3"],
        sources=["a/t0.wav", "a/t1.wav", "b/t2 with space.flac", "c/t3.ogg"],
        labels=np.array([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=np.uint8),
        split=["train", "valid", "train", "test"],
        split_info={"kind": "stratified", "seed": 3},
        skipped=list(skipped),
    )


def make_waves():
    rng = np.random.default_rng(0)
    return [rng.uniform(-0.9, 0.9, n).astype(np.float32) for n in LENGTHS]


@pytest.fixture
def cache_path(tmp_path):
    return write_cache(tmp_path / "cache.h5", make_tracklist(), iter(make_waves()), sample_rate=16000,
                       config_hash="abc123def456", flush_samples=1500)


def test_layout(cache_path):
    with h5py.File(cache_path, "r") as f:
        assert dict(f.attrs) == {
            "schema_version": 1, "sample_rate": 16000, "task": "tags", "dataset": "toy",
            "split_info": json.dumps({"kind": "stratified", "seed": 3}, sort_keys=True), "config_hash": "abc123def456",
        }
        assert sorted(f) == sorted(["audio", "offsets", "lengths", "track_ids", "sources", "labels",
                                    "label_names", "split", "skipped"])
        assert f["audio"].dtype == np.int16 and f["audio"].shape == (sum(LENGTHS),)
        assert f["offsets"].dtype == np.int64 and f["lengths"].dtype == np.int64
        np.testing.assert_array_equal(f["offsets"][()], [0, 1000, 1037, 3537])
        np.testing.assert_array_equal(f["lengths"][()], LENGTHS)
        for name in ("track_ids", "sources", "label_names", "split", "skipped"):
            assert h5py.check_string_dtype(f[name].dtype).encoding == "utf-8", name
        assert list(f["track_ids"].asstr()[()]) == ["t0", "t1", "t2", "t3"]
        assert list(f["sources"].asstr()[()])[2] == "b/t2 with space.flac"
        assert list(f["label_names"].asstr()[()]) == ["loud", "piano", "drums"]
        assert list(f["split"].asstr()[()]) == ["train", "valid", "train", "test"]
        assert f["labels"].dtype == np.uint8 and f["labels"].shape == (4, 3)
        np.testing.assert_array_equal(f["labels"][()], make_tracklist().labels)
        assert f["skipped"].shape == (2, 2)
        assert f["skipped"].asstr()[()].tolist() == [["gone.wav", "no such file"], ["bad.mp3", "cannot decode"]]


def test_reader_attributes(cache_path):
    with AudioCache(cache_path) as cache:
        assert (cache.sample_rate, cache.task, cache.dataset) == (16000, "tags", "toy")
        assert cache.config_hash == "abc123def456"
        assert cache.split_info == {"kind": "stratified", "seed": 3}
        assert cache.label_names == ["loud", "piano", "drums"]
        assert cache.track_ids.tolist() == ["t0", "t1", "t2", "t3"] and cache.track_ids.dtype.kind == "U"
        assert cache.split.tolist() == ["train", "valid", "train", "test"]
        assert cache.labels.dtype == np.uint8
        np.testing.assert_array_equal(cache.lengths, LENGTHS)
        assert (cache.num_tracks, len(cache), cache.num_labels, cache.total_samples) == (4, 4, 3, sum(LENGTHS))
        assert cache.skipped == [("gone.wav", "no such file"), ("bad.mp3", "cannot decode")]
        np.testing.assert_array_equal(cache.indices("train"), [0, 2])
        np.testing.assert_array_equal(cache.indices("test"), [3])
        assert cache.indices("valid").dtype == np.int64
        with pytest.raises(ValueError, match="unknown split 'dev'"):
            cache.indices("dev")


def test_round_trip_within_int16_precision(cache_path):
    with AudioCache(cache_path) as cache:
        for i, wave in enumerate(make_waves()):
            out = cache.track(i)
            assert out.dtype == np.float32 and out.shape == wave.shape
            np.testing.assert_allclose(out, wave, atol=1.5 / 32768)
        with pytest.raises(IndexError, match="track index 4 out of range"):
            cache.track(4)


def test_crop_pads_with_zeros(cache_path):
    with AudioCache(cache_path) as cache:
        whole = cache.track(1)  # 37 samples
        np.testing.assert_array_equal(cache.crop(1, 5, 10), whole[5:15])
        np.testing.assert_array_equal(cache.crop(1, 30, 10), np.concatenate([whole[30:], np.zeros(3)]))
        np.testing.assert_array_equal(cache.crop(1, -4, 10), np.concatenate([np.zeros(4), whole[:6]]))
        np.testing.assert_array_equal(cache.crop(1, 0, 50), np.concatenate([whole, np.zeros(13)]))
        np.testing.assert_array_equal(cache.crop(1, 100, 8), np.zeros(8))
        assert cache.crop(2, 2490, 20).dtype == np.float32 and cache.crop(2, 2490, 20).shape == (20,)
        # A crop never leaks into the next track.
        np.testing.assert_array_equal(cache.crop(0, 995, 10)[5:], np.zeros(5))


def test_quantisation_golden_values():
    out = to_int16(np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0], dtype=np.float32))
    np.testing.assert_array_equal(out, [-32767, -32767, -16384, 0, 16384, 32767, 32767])
    assert out.dtype == np.int16
    same = np.array([1, -5], dtype=np.int16)
    assert to_int16(same) is same


def test_int16_input_is_stored_as_is(tmp_path):
    waves = [to_int16(w) for w in make_waves()]
    path = write_cache(tmp_path / "c.h5", make_tracklist(), waves, sample_rate=16000)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["audio"][()], np.concatenate(waves))


def test_no_skipped_gives_empty_table(tmp_path):
    path = write_cache(tmp_path / "c.h5", make_tracklist(skipped=()), make_waves(), sample_rate=16000)
    with h5py.File(path, "r") as f:
        assert f["skipped"].shape == (0, 2)
    with AudioCache(path) as cache:
        assert cache.skipped == []


@pytest.mark.parametrize(
    "waves, message",
    [(make_waves()[:3], "got 3 waveforms for 4 tracks"),
     (make_waves() + [np.zeros(3)], "more waveforms than the 4 tracks"),
     (make_waves()[:2] + [np.full(5, np.nan)] + make_waves()[3:],
      r"track 2 \(b/t2 with space.flac\): waveform holds non-finite"),
     (make_waves()[:1] + [np.zeros((3, 2))] + make_waves()[2:], "expected a 1-D waveform")],
)
def test_writer_refuses_bad_input_and_leaves_nothing(tmp_path, waves, message):
    with pytest.raises(ValueError, match=message):
        write_cache(tmp_path / "c.h5", make_tracklist(), waves, sample_rate=16000)
    assert list(tmp_path.iterdir()) == []


def test_unknown_schema_version_refused(cache_path):
    with h5py.File(cache_path, "a") as f:
        f.attrs["schema_version"] = 2
    with pytest.raises(CacheError, match=r"cache\.h5: audio cache schema version 2 is not supported"):
        AudioCache(cache_path)


def test_missing_part_refused(cache_path):
    with h5py.File(cache_path, "a") as f:
        del f["lengths"]
    with pytest.raises(CacheError, match="incomplete audio cache, missing /lengths"):
        AudioCache(cache_path)


def test_missing_and_foreign_files_refused(tmp_path):
    with pytest.raises(CacheError, match=r"nothing\.h5: no such audio cache"):
        AudioCache(tmp_path / "nothing.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(CacheError, match=r"text\.h5: not a readable HDF5"):
        AudioCache(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(CacheError, match=r"other\.h5: not an audio cache"):
        AudioCache(tmp_path / "other.h5")


def test_reader_closes_and_pickles(cache_path):
    cache = AudioCache(cache_path)
    copy = pickle.loads(pickle.dumps(cache))
    cache.close()
    cache.close()
    np.testing.assert_allclose(copy.track(3), make_waves()[3], atol=1.5 / 32768)
    with copy:
        pass
    with pytest.raises(ValueError, match="the audio cache is closed"):
        copy.track(0)


def test_numeric_datasets_carry_checksums(cache_path):
    with h5py.File(cache_path, "r") as f:
        assert {name for name in f if f[name].fletcher32} == {"audio", "offsets", "lengths", "labels"}
    with AudioCache(cache_path) as cache:
        assert cache.checksummed


def test_cache_written_before_checksums_still_reads(cache_path):
    """A cache of an older msagg (no Fletcher-32 filter anywhere) reads as before, unverified."""
    with h5py.File(cache_path, "a") as f:
        for name in ("audio", "offsets", "lengths", "labels"):
            data = f[name][()]
            del f[name]
            f.create_dataset(name, data=data)
    with AudioCache(cache_path) as cache:
        assert not cache.checksummed
        np.testing.assert_allclose(cache.track(2), make_waves()[2], atol=1.5 / 32768)
        np.testing.assert_array_equal(cache.lengths, LENGTHS)


@pytest.mark.parametrize("value, shown", [("1", "schema_version '1' (a str)"), (1.0, "schema_version 1.0 (a float)"),
                                          (True, "schema_version True (a bool)")])
def test_schema_version_of_another_type_is_refused_saying_what_it_is(cache_path, value, shown):
    """Only the integer 1 is version 1: msagg writes an integer, so a string "1" was written by
    something else, and the message says what was found and its type."""
    with h5py.File(cache_path, "a") as f:
        f.attrs["schema_version"] = value
    expected = f"cache.h5: audio cache {shown} is not supported (this msagg reads schema version 1, an integer)"
    with pytest.raises(CacheError, match=re.escape(expected + "; prepare the dataset again")):
        AudioCache(cache_path)


def test_numpy_integer_schema_versions_are_accepted(cache_path):
    for value in (np.int32(1), np.uint8(1), np.int64(1)):
        with h5py.File(cache_path, "a") as f:
            f.attrs["schema_version"] = value
        with AudioCache(cache_path) as cache:
            assert cache.num_tracks == 4


def test_damaged_table_is_named(cache_path):
    with h5py.File(cache_path, "r") as f:
        info = f["lengths"].id.get_chunk_info(0)
    with open(cache_path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * 8)
    with pytest.raises(CacheError, match=r"cache\.h5: damaged audio cache: /lengths fail their Fletcher-32 checksum"):
        AudioCache(cache_path)
