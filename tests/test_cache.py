"""msagg.data.formats.cache and data.cache_writer: the sharded layout (schema 2), schema-1 files read as before,
int16 round trips, crops, shard ranges, refusals, missing and replaced shards."""

import hashlib
import json
import os
import pickle
import re

import h5py
import numpy as np
import pytest

from msagg.data.formats.cache import AudioCache, CacheError, ShardRange, cache_file, cache_run_folder, to_int16
from msagg.data.formats.cache_layout import TEXT_TABLES
from msagg.data.formats.cache_writer import read_shard_summary, write_cache, write_linked_cache
from msagg.data.integrity import text_sha256 as text_sha256_of
from msagg.data.tracklist import TrackList
from legacy_cache import as_before_text_sha256, write_cache_v1

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
def cache_dir(tmp_path):
    """A sharded cache: tracks 0-1 in shard 0, tracks 2-3 in shard 1."""
    return write_cache(tmp_path / "run" / "cache", make_tracklist(), iter(make_waves()), sample_rate=16000,
                       config_hash="abc123def456", tracks_per_shard=2)


@pytest.fixture
def old_cache(tmp_path):
    """A schema-1 cache.h5, as msagg wrote before the sharded cache."""
    return write_cache_v1(tmp_path / "old" / "cache.h5", make_tracklist(), iter(make_waves()), sample_rate=16000,
                          config_hash="abc123def456", flush_samples=1500)


@pytest.fixture(params=["sharded", "schema1"])
def any_cache(request, tmp_path):
    return request.getfixturevalue("cache_dir" if request.param == "sharded" else "old_cache")


def test_layout(cache_dir):
    assert sorted(p.name for p in cache_dir.iterdir()) == ["index.h5", "shard-00000.h5", "shard-00001.h5"]
    with h5py.File(cache_dir / "index.h5", "r") as f:
        attrs = dict(f.attrs)
        text_sha256 = json.loads(attrs.pop("text_sha256"))
        assert attrs == {
            "schema_version": 2, "sample_rate": 16000, "task": "tags", "dataset": "toy",
            "split_info": json.dumps({"kind": "stratified", "seed": 3}, sort_keys=True), "config_hash": "abc123def456",
            "audio_config_hash": "abc123def456", "linked": False,
        }
        assert sorted(f) == sorted(["shard", "offsets", "lengths", "track_ids", "sources", "labels", "label_names",
                                    "split", "skipped", "shards"])
        assert sorted(f["shards"]) == ["audio_ranges", "bytes", "file", "meta_sha256", "num_samples", "sha256"]
        # Each text table's sha256: of its values as compact ASCII JSON (golden for the split).
        assert sorted(text_sha256) == sorted(TEXT_TABLES)
        assert text_sha256["split"] == hashlib.sha256(b'["train","valid","train","test"]').hexdigest()
        assert all(text_sha256[name] == text_sha256_of(f[name].asstr()[()]) for name in TEXT_TABLES)
        np.testing.assert_array_equal(f["shard"][()], [0, 0, 1, 1])
        np.testing.assert_array_equal(f["offsets"][()], [0, 1000, 0, 2500])
        np.testing.assert_array_equal(f["lengths"][()], LENGTHS)
        assert f["shards/file"].asstr()[()].tolist() == ["shard-00000.h5", "shard-00001.h5"]
        np.testing.assert_array_equal(f["shards/num_samples"][()], [1037, 2900])
        assert f["shards/bytes"][()].tolist() == [(cache_dir / f"shard-0000{i}.h5").stat().st_size for i in (0, 1)]
        for name in TEXT_TABLES:
            assert h5py.check_string_dtype(f[name].dtype).encoding == "utf-8", name
        assert list(f["track_ids"].asstr()[()]) == ["t0", "t1", "t2", "t3"]
        assert list(f["sources"].asstr()[()])[2] == "b/t2 with space.flac"
        assert list(f["label_names"].asstr()[()]) == ["loud", "piano", "drums"]
        assert list(f["split"].asstr()[()]) == ["train", "valid", "train", "test"]
        np.testing.assert_array_equal(f["labels"][()], make_tracklist().labels)
        assert f["skipped"].asstr()[()].tolist() == [["gone.wav", "no such file"], ["bad.mp3", "cannot decode"]]
        sha = f["shards/sha256"].asstr()[()].tolist()
        meta, ranges = f["shards/meta_sha256"].asstr()[()].tolist(), f["shards/audio_ranges"][()]
        assert f["shards/audio_ranges"].fletcher32 and ranges.shape[1] == 3 and sorted(set(ranges[:, 0])) == [0, 1]
    quantised = [to_int16(w) for w in make_waves()]
    with h5py.File(cache_dir / "shard-00001.h5", "r") as f:
        assert {k: f.attrs[k] for k in ("schema_version", "kind", "shard", "first", "num_planned", "sample_rate")} == {
            "schema_version": 2, "kind": "shard", "shard": 1, "first": 2, "num_planned": 2, "sample_rate": 16000}
        assert f.attrs["sha256"] == sha[1]
        assert f["audio"].dtype == np.int16 and f["audio"].fletcher32
        chunks = [f["audio"].id.get_chunk_info(i) for i in range(f["audio"].id.get_num_chunks())]
        assert [[c.byte_offset, c.byte_offset + c.size] for c in chunks] == ranges[ranges[:, 0] == 1, 1:].tolist()
        np.testing.assert_array_equal(f["audio"][()], np.concatenate(quantised[2:]))
        np.testing.assert_array_equal(f["rows"][()], [2, 3])
        np.testing.assert_array_equal(f["lengths"][()], LENGTHS[2:])
        assert f["failed_rows"].shape == (0,) and f["failed_reasons"].shape == (0,)
    summary = read_shard_summary(cache_dir / "shard-00001.h5")
    assert (summary["rows"], summary["lengths"], summary["failed"], summary["num_samples"]) == ([2, 3], LENGTHS[2:],
                                                                                              [], 2900)
    assert summary["meta_sha256"] == meta[1] and summary["audio_ranges"] == ranges[ranges[:, 0] == 1, 1:].tolist()
    data = (cache_dir / "shard-00001.h5").read_bytes()
    (start, end), = summary["audio_ranges"]  # one chunk: the bytes outside it are HDF5's
    assert hashlib.sha256(data[:start] + data[end:]).hexdigest() == meta[1]


def test_schema1_layout_still_reads(old_cache):
    with h5py.File(old_cache, "r") as f:
        assert f.attrs["schema_version"] == 1 and f["audio"].shape == (sum(LENGTHS),)
    with AudioCache(old_cache.parent) as cache:  # a run folder holding only cache.h5
        assert cache.path == old_cache and cache.schema_version == 1 and not cache.linked
        assert cache.shards == [ShardRange(0, old_cache, 0, 4)]
        np.testing.assert_array_equal(cache.offsets, [0, 1000, 1037, 3537])
        assert cache.shard_files == [old_cache] and cache.shard_sha256 == [""]


def test_reader_attributes(any_cache):
    with AudioCache(any_cache) as cache:
        assert (cache.sample_rate, cache.task, cache.dataset) == (16000, "tags", "toy")
        assert cache.config_hash == "abc123def456" == cache.audio_config_hash
        assert cache.split_info == {"kind": "stratified", "seed": 3}
        assert cache.label_names == ["loud", "piano", "drums"]
        assert cache.track_ids.tolist() == ["t0", "t1", "t2", "t3"] and cache.track_ids.dtype.kind == "U"
        assert cache.split.tolist() == ["train", "valid", "train", "test"]
        assert cache.labels.dtype == np.uint8
        np.testing.assert_array_equal(cache.lengths, LENGTHS)
        assert (cache.num_tracks, len(cache), cache.num_labels, cache.total_samples) == (4, 4, 3, sum(LENGTHS))
        assert cache.audio_num_samples == sum(LENGTHS)
        assert cache.skipped == [("gone.wav", "no such file"), ("bad.mp3", "cannot decode")]
        np.testing.assert_array_equal(cache.indices("train"), [0, 2])
        np.testing.assert_array_equal(cache.indices("test"), [3])
        assert cache.indices("valid").dtype == np.int64
        with pytest.raises(ValueError, match="unknown split 'dev'"):
            cache.indices("dev")


def test_round_trip_within_int16_precision(any_cache):
    with AudioCache(any_cache) as cache:
        for i, wave in enumerate(make_waves()):
            out = cache.track(i)
            assert out.dtype == np.float32 and out.shape == wave.shape
            np.testing.assert_allclose(out, wave, atol=1.5 / 32768)
        with pytest.raises(IndexError, match="track index 4 out of range"):
            cache.track(4)


def test_shards_hold_what_was_written_bit_for_bit(tmp_path):
    """Many shards of varied tracks (one of them a single track) read back exactly the int16 samples given."""
    rng = np.random.default_rng(5)
    n = 11
    waves = [to_int16(rng.uniform(-1, 1, int(rng.integers(1, 90000)))) for _ in range(n)]
    tracks = TrackList(name="toy", task="classes", label_names=["a", "b"], track_ids=[f"t{i}" for i in range(n)],
                       sources=[f"s{i}" for i in range(n)], labels=np.eye(2, dtype=np.uint8)[np.arange(n) % 2],
                       split=["train"] * n)
    folder = write_cache(tmp_path / "cache", tracks, waves, sample_rate=8000, tracks_per_shard=5)
    with AudioCache(folder) as cache:
        assert [(r.shard, r.first, r.end) for r in cache.shards] == [(0, 0, 5), (1, 5, 10), (2, 10, 11)]
        assert [r.path.name for r in cache.shards] == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
        for i, wave in enumerate(waves):
            assert (cache.track(i) * 32768).astype(np.int16).tobytes() == wave.tobytes()
            assert cache.shard_of[i] == i // 5


def test_crop_pads_with_zeros(any_cache):
    with AudioCache(any_cache) as cache:
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


def test_no_skipped_gives_empty_table(tmp_path):
    path = write_cache(tmp_path / "c", make_tracklist(skipped=()), make_waves(), sample_rate=16000)
    with h5py.File(path / "index.h5", "r") as f:
        assert f["skipped"].shape == (0, 2)
    with AudioCache(path) as cache:
        assert cache.skipped == [] and len(cache.shards) == 1


@pytest.mark.parametrize(
    "waves, message",
    [(make_waves()[:3], "got 3 waveforms for 4 tracks"),
     (make_waves() + [np.zeros(3)], "more waveforms than the 4 tracks"),
     (make_waves()[:2] + [np.full(5, np.nan)] + make_waves()[3:], r"track 2: waveform holds non-finite"),
     (make_waves()[:1] + [np.zeros((3, 2))] + make_waves()[2:], "expected a 1-D waveform")],
)
def test_writer_refuses_bad_input_and_leaves_nothing(tmp_path, waves, message):
    with pytest.raises(ValueError, match=message):
        write_cache(tmp_path / "c", make_tracklist(), waves, sample_rate=16000, tracks_per_shard=2)
    assert list(tmp_path.iterdir()) == []


def test_paths_resolve_to_the_cache_and_its_run_folder(cache_dir, old_cache):
    run = cache_dir.parent
    for given in (run, cache_dir, cache_dir / "index.h5"):
        assert cache_file(given) == cache_dir / "index.h5" and cache_run_folder(given) == run
    for given in (old_cache.parent, old_cache):
        assert cache_file(given) == old_cache and cache_run_folder(given) == old_cache.parent
    assert cache_run_folder(run / "nowhere") == run / "nowhere"
    with pytest.raises(CacheError, match=r"shard-00000\.h5: a shard of an audio cache, not the cache"):
        AudioCache(cache_dir / "shard-00000.h5")


def test_unknown_schema_version_refused(cache_dir, old_cache):
    for path in (cache_dir / "index.h5", old_cache):
        with h5py.File(path, "a") as f:
            f.attrs["schema_version"] = 3
        with pytest.raises(CacheError, match=re.escape(f"{path}: audio cache schema version 3 is not supported")):
            AudioCache(path)


def test_missing_part_refused(cache_dir, old_cache):
    with h5py.File(old_cache, "a") as f:
        del f["lengths"]
    with pytest.raises(CacheError, match="incomplete audio cache, missing /lengths"):
        AudioCache(old_cache)
    with h5py.File(cache_dir / "index.h5", "a") as f:
        del f["shards/sha256"]
    with pytest.raises(CacheError, match="incomplete audio cache, missing /shards/sha256"):
        AudioCache(cache_dir)


def test_missing_and_foreign_files_refused(tmp_path):
    with pytest.raises(CacheError, match=r"nothing\.h5: no such audio cache"):
        AudioCache(tmp_path / "nothing.h5")
    with pytest.raises(CacheError, match=r"empty/cache/index\.h5: no such audio cache"):
        AudioCache((tmp_path / "empty").mkdir() or tmp_path / "empty")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(CacheError, match=r"text\.h5: not a readable HDF5"):
        AudioCache(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(CacheError, match=r"other\.h5: not an audio cache"):
        AudioCache(tmp_path / "other.h5")


def test_reader_closes_and_pickles(any_cache):
    cache = AudioCache(any_cache)
    copy = pickle.loads(pickle.dumps(cache))
    cache.close()
    cache.close()
    np.testing.assert_allclose(copy.track(3), make_waves()[3], atol=1.5 / 32768)
    with copy:
        pass
    with pytest.raises(ValueError, match="the audio cache is closed"):
        copy.track(0)


def test_shards_open_lazily_and_at_most_max_open(cache_dir, monkeypatch):
    from msagg.data.formats import cache as cache_lib

    monkeypatch.setattr(cache_lib, "MAX_OPEN_SHARDS", 1)
    with AudioCache(cache_dir) as cache:
        assert list(cache._open) == []  # nothing opened before a track is read
        cache.track(3)
        assert list(cache._open) == [1]
        cache.track(0)
        assert list(cache._open) == [0]  # shard 1 closed to stay within the limit
        np.testing.assert_allclose(cache.track(2), make_waves()[2], atol=1.5 / 32768)


def test_numeric_datasets_carry_checksums(cache_dir, old_cache):
    with h5py.File(cache_dir / "index.h5", "r") as f:
        assert {name for name in f if isinstance(f[name], h5py.Dataset) and f[name].fletcher32} == {
            "shard", "offsets", "lengths", "labels"}
        assert {name for name in f["shards"] if f["shards"][name].fletcher32} == {"num_samples", "bytes", "audio_ranges"}
    with h5py.File(cache_dir / "shard-00000.h5", "r") as f:
        assert {name for name in f if f[name].fletcher32} == {"audio", "rows", "lengths", "failed_rows"}
    with h5py.File(old_cache, "r") as f:
        assert {name for name in f if f[name].fletcher32} == {"audio", "offsets", "lengths", "labels"}
    for path in (cache_dir, old_cache):
        with AudioCache(path) as cache:
            assert cache.checksummed


def test_cache_written_before_checksums_still_reads(old_cache):
    """A schema-1 cache of an older msagg (no Fletcher-32 filter anywhere) reads as before, unverified."""
    with h5py.File(old_cache, "a") as f:
        for name in ("audio", "offsets", "lengths", "labels"):
            data = f[name][()]
            del f[name]
            f.create_dataset(name, data=data)
    with AudioCache(old_cache) as cache:
        assert not cache.checksummed
        np.testing.assert_allclose(cache.track(2), make_waves()[2], atol=1.5 / 32768)
        np.testing.assert_array_equal(cache.lengths, LENGTHS)


@pytest.mark.parametrize("value, shown", [("1", "schema_version '1' (a str)"), (2.0, "schema_version 2.0 (a float)"),
                                          (True, "schema_version True (a bool)")])
def test_schema_version_of_another_type_is_refused_saying_what_it_is(cache_dir, value, shown):
    """Only integers are versions: msagg writes an integer, so a string "2" was written by
    something else, and the message says what was found and its type."""
    with h5py.File(cache_dir / "index.h5", "a") as f:
        f.attrs["schema_version"] = value
    expected = f"index.h5: audio cache {shown} is not supported (this msagg reads schema versions 1, 2, integers)"
    with pytest.raises(CacheError, match=re.escape(expected + "; prepare the dataset again")):
        AudioCache(cache_dir)


def test_numpy_integer_schema_versions_are_accepted(cache_dir, old_cache):
    for path, version in ((cache_dir / "index.h5", 2), (old_cache, 1)):
        for value in (np.int32(version), np.uint8(version), np.int64(version)):
            with h5py.File(path, "a") as f:
                f.attrs["schema_version"] = value
            with AudioCache(path) as cache:
                assert cache.num_tracks == 4 and cache.schema_version == version


def test_damaged_table_is_named(cache_dir):
    path = cache_dir / "index.h5"
    with h5py.File(path, "r") as f:
        info = f["lengths"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * 8)
    with pytest.raises(CacheError, match=r"index\.h5: damaged audio cache: /lengths fail their Fletcher-32 checksum"):
        AudioCache(cache_dir)


def test_a_missing_shard_names_it_and_its_tracks(cache_dir):
    shard = cache_dir / "shard-00001.h5"
    shard.unlink()
    with pytest.raises(CacheError) as err:
        AudioCache(cache_dir)
    assert str(err.value) == (f"{cache_dir / 'index.h5'}: audio shard {shard} is missing (tracks t2, t3); "
                              "prepare the dataset again")


@pytest.mark.parametrize("older_index", [False, True], ids=["index", "index-of-older-msagg"])
def test_a_shard_replaced_by_another_names_it(cache_dir, tmp_path, older_index):
    """Another cache's shard 1 of the same size (other samples) in its place: found when first read,
    by the sha256 of its metadata before HDF5 opens it, or (an index without it) by its /audio sha256."""
    waves = make_waves()
    other = write_cache(tmp_path / "other", make_tracklist(), waves[:2] + [-w for w in waves[2:]], sample_rate=16000,
                        tracks_per_shard=2)
    os.replace(other / "shard-00001.h5", cache_dir / "shard-00001.h5")
    if older_index:
        as_before_text_sha256(cache_dir / "index.h5")
        message = r"was replaced \(sha256 or hash \w+, 2900 samples; expected \w+, 2900\)"
    else:
        message = r"was replaced or damaged \(the sha256 of its HDF5 metadata is \w{16}, the index records \w{16}\)"
    with AudioCache(cache_dir) as cache:
        np.testing.assert_allclose(cache.track(0), waves[0], atol=1.5 / 32768)  # shard 0 is fine
        with pytest.raises(CacheError, match=rf"audio shard .*shard-00001\.h5 {message} \(tracks t2, t3\); prepare"):
            cache.track(3)
    with open(cache_dir / "shard-00001.h5", "ab") as fh:
        fh.write(b"more")
    with pytest.raises(CacheError, match=r"shard-00001\.h5 was replaced \(\d+ bytes; expected \d+\) \(tracks t2, t3\)"):
        AudioCache(cache_dir)


def test_a_linked_cache_reads_the_store_shards(tmp_path, cache_dir, old_cache):
    for store_path in (cache_dir, old_cache):
        with AudioCache(store_path) as store:
            index = write_linked_cache(tmp_path / "fold" / "cache" / "index.h5", make_tracklist(skipped=()), store,
                                       [3, 2, 1, 0], config_hash="f0f0f0f0f0f0")
        with AudioCache(tmp_path / "fold") as linked, AudioCache(store_path) as store:
            assert linked.linked and linked.config_hash == "f0f0f0f0f0f0"
            assert linked.audio_config_hash == store.config_hash and linked.audio_store == store.audio_store
            for i in range(4):
                np.testing.assert_array_equal(linked.track(i), store.track(3 - i))
        index.unlink()


def test_a_run_folder_named_cache_is_a_run_folder(tmp_path):
    run = tmp_path / "cache"
    write_cache(run / "cache", make_tracklist(), make_waves(), sample_rate=16000)
    assert cache_file(run) == run / "cache" / "index.h5" and cache_run_folder(run) == run
    unfinished = tmp_path / "other" / "cache"
    unfinished.mkdir(parents=True)
    (unfinished / "config.json").write_text("{}")
    assert cache_run_folder(unfinished) == unfinished
    assert cache_run_folder(tmp_path / "run" / "cache") == tmp_path / "run" / "cache"  # missing: as given


def test_a_schema1_linked_cache_still_reads(tmp_path, old_cache):
    from legacy_cache import write_linked_cache_v1

    fold = tmp_path / "fold" / "cache.h5"
    with AudioCache(old_cache) as store:
        write_linked_cache_v1(fold, make_tracklist(), store, [1, 0, 3, 2], config_hash="f0f0f0f0f0f0")
    with AudioCache(fold.parent) as linked, AudioCache(old_cache) as store:
        assert linked.linked and linked.schema_version == 1 and linked.audio_store == old_cache
        assert linked.shards == [ShardRange(0, old_cache, 0, 4)]
        for i, j in enumerate([1, 0, 3, 2]):
            np.testing.assert_array_equal(linked.track(i), store.track(j))
    os.rename(old_cache, old_cache.with_name("kept.h5"))
    with pytest.raises(CacheError) as err:
        AudioCache(fold)
    assert str(err.value) == (f"{fold}: its audio lies in {old_cache}, which is missing (move prepare run folders "
                              "together, or prepare the dataset again)")
