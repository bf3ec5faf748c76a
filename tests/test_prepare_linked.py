"""prepare --audio-from: a fold's cache links to the audio of one decoded prepare run (crossval decodes once)."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from msagg.data import audio
from msagg.data.formats.cache import AudioCache, CacheError
from msagg.data.formats.cache_writer import write_cache
from legacy_cache import write_cache_v1
from msagg.data.errors import ConfigError
from msagg.stages.runs.upstream import UnfinishedRunError
from msagg.pipeline.cli import main
from msagg.stages import prepare
from msagg.stages.runs.folder import config_dict, config_hash

RATE = 8000  # the files are 16 kHz: every track is resampled


@pytest.fixture
def corpus(tmp_path):
    """A folder dataset: two classes of 6 tones (1.5-2.5 s, some stereo) and one corrupt file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "corpus"
    for c, (label, freq) in enumerate((("low", 220.0), ("high", 1760.0))):
        (root / label).mkdir(parents=True)
        for i in range(6):
            t = np.arange(int(16000 * (1.5 + 0.2 * i))) / 16000
            tone = 0.3 * np.sin(2 * np.pi * freq * (1 + 0.05 * i) * t) + 0.01 * rng.standard_normal(t.size)
            audio.write(root / label / f"{label}{i}.wav", np.stack([tone, tone], 1) if (i + c) % 2 else tone, 16000)
    (root / "high" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnonsense" * 8)
    return root


def config(corpus, **changes):
    return prepare.Config(**{"dataset": "folder", "source": str(corpus), "sample_rate": RATE, "folds": 2, **changes})


def run(cfg, out, **kwargs):
    return prepare.run(cfg, out, workers=1, progress=False, **kwargs)


@pytest.fixture
def runs(tmp_path, corpus):
    """``runs/audio`` decoded (fold 1's options), ``runs/fold1`` and ``runs/fold2`` linked to it."""
    root = tmp_path / "runs"
    run(config(corpus, fold=1), root / "audio")
    for fold in (1, 2):
        run(config(corpus, fold=fold, audio_from=str(root / "audio")), root / f"fold{fold}")
    return root


def test_fold_caches_hold_what_a_full_decode_holds(tmp_path, corpus, runs):
    for fold in (1, 2):
        full = run(config(corpus, fold=fold), tmp_path / f"full{fold}")
        with AudioCache(runs / f"fold{fold}") as linked, AudioCache(full) as decoded:
            assert linked.linked and not decoded.linked and linked.checksummed
            assert linked.audio_store == runs / "audio" / "cache"
            for name in ("track_ids", "sources", "labels", "split", "lengths"):
                np.testing.assert_array_equal(getattr(linked, name), getattr(decoded, name), err_msg=name)
            assert (linked.label_names, linked.split_info, linked.skipped) == (
                decoded.label_names, decoded.split_info, decoded.skipped)
            assert (linked.sample_rate, linked.task, linked.dataset) == (RATE, "classes", "corpus")
            assert linked.num_tracks == 12 and linked.skipped[0][1].startswith("cannot decode")
            for i in range(linked.num_tracks):
                np.testing.assert_array_equal(linked.track(i), decoded.track(i))
            np.testing.assert_array_equal(linked.crop(5, -10, 30000), decoded.crop(5, -10, 30000))
        assert (runs / f"fold{fold}" / "skipped.csv").read_text() == (full.parent / "skipped.csv").read_text()
    with AudioCache(runs / "fold1") as one, AudioCache(runs / "fold2") as two:
        assert not np.array_equal(one.split, two.split)  # each fold its own split, one copy of the audio
    with h5py.File(runs / "fold1" / "cache" / "index.h5", "r") as f:
        files = f["shards/file"].asstr()[()].tolist()
        assert f.attrs["linked"] and files[0] == "../../audio/cache/shard-00000.h5"
    assert sorted(p.name for p in (runs / "fold1" / "cache").iterdir()) == ["index.h5"]
    store = sum(p.stat().st_size for p in (runs / "audio" / "cache").iterdir())
    assert (runs / "fold1" / "cache" / "index.h5").stat().st_size < 0.1 * store


def test_the_store_is_an_upstream_and_nothing_is_decoded(runs):
    done = json.loads((runs / "fold2" / "DONE").read_text())
    assert (done["num_tracks"], done["num_skipped"], done["num_decoded_this_run"]) == (12, 1, 0)
    assert done["audio_from"] == str(runs / "audio")
    upstream = json.loads((runs / "fold2" / "metadata.json").read_text())["upstream"]
    store_hash = json.loads((runs / "audio" / "DONE").read_text())["config_hash"]
    assert upstream == {"audio_from": {"path": str(runs / "audio"), "config_hash": store_hash}}
    assert json.loads((runs / "fold2" / "config.json").read_text())["audio_from"] == str(runs / "audio")
    assert sorted(p.name for p in (runs / "fold2").iterdir()) == [
        "DONE", "cache", "config.json", "metadata.json", "skipped.csv"]


def test_rerunning_a_finished_fold_is_a_noop(corpus, runs):
    before = {p.name: p.stat().st_mtime_ns for p in (runs / "fold1").iterdir()}
    run(config(corpus, fold=1, audio_from=str(runs / "audio")), runs / "fold1")
    assert {p.name: p.stat().st_mtime_ns for p in (runs / "fold1").iterdir()} == before


def test_moving_the_runs_folder_keeps_the_folds_readable(tmp_path, runs, monkeypatch):
    with AudioCache(runs / "fold2") as cache:
        expected = [cache.track(i) for i in range(cache.num_tracks)]
    moved = tmp_path / "elsewhere" / "runs"
    moved.parent.mkdir()
    shutil.move(runs, moved)
    monkeypatch.chdir(tmp_path)  # the link is followed from the cache's folder, not the working directory
    with AudioCache(moved / "fold2") as cache:
        assert cache.audio_store == moved / "audio" / "cache"
        copy = pickle.loads(pickle.dumps(cache))
        for i, wave in enumerate(expected):
            np.testing.assert_array_equal(cache.track(i), wave)
    with copy:
        np.testing.assert_array_equal(copy.track(3), expected[3])


def test_a_missing_or_replaced_store_is_one_line_naming_both_files(runs):
    fold, store = runs / "fold1" / "cache" / "index.h5", runs / "audio" / "cache"
    with AudioCache(runs / "fold1") as cache:
        first = cache.shards[0]  # the first shard holding tracks (shard 0 holds the broken file alone)
        shard, tracks = first.path, cache.track_ids[first.first:first.end].tolist()
    os.rename(store, store.with_name("kept"))
    with pytest.raises(CacheError) as err:
        AudioCache(runs / "fold1")
    assert str(err.value) == (f"{fold}: its audio lies in {shard}, which is missing (tracks {', '.join(tracks)}; move "
                              "prepare run folders together, or prepare the dataset again)")
    kept = store.with_name("kept")
    with AudioCache(kept) as cache:
        # Another cache of the same config (files changed, prepared again with --overwrite): the
        # same shards but one, whose samples differ.
        waves = [cache.track(i) for i in range(cache.num_tracks)]
        waves[0] = -waves[0]
        other = write_cache(runs / "other", _tracklist_of(cache), waves, sample_rate=RATE,
                            config_hash=cache.config_hash, tracks_per_shard=1)
    shutil.copytree(kept, store)
    shutil.copy(other / f"shard-{0:05d}.h5", store / f"shard-{1:05d}.h5")  # shard 0 holds the broken file alone
    with pytest.raises(CacheError, match=r"fold1/cache/index\.h5: its audio lies in .*audio/cache/shard-00001\.h5, "
                                         r"which was replaced or damaged \(the sha256 of its HDF5 metadata is \w+, the index "
                                         r"records \w+\) \(tracks high/high0; move "):
        with AudioCache(fold) as cache:
            cache.track(0)


def test_a_fold_of_an_older_msagg_store_links_to_its_cache_h5(tmp_path, runs, corpus):
    """A store decoded by an older msagg (schema-1 cache.h5): a new fold links to it as one shard."""
    old = tmp_path / "old-audio"
    shutil.copytree(runs / "audio", old, ignore=shutil.ignore_patterns("cache"))
    with AudioCache(runs / "audio") as cache:
        write_cache_v1(old / "cache.h5", _tracklist_of(cache), [cache.track(i) for i in range(cache.num_tracks)],
                       sample_rate=RATE, config_hash=cache.config_hash)
        expected = [cache.track(i) for i in range(cache.num_tracks)]
    run(config(corpus, fold=1, audio_from=str(old)), tmp_path / "fold")
    with AudioCache(tmp_path / "fold") as fold, AudioCache(runs / "fold1") as same:
        assert fold.linked and fold.audio_store == old / "cache.h5"
        assert fold.track_ids.tolist() == same.track_ids.tolist()
        for i in range(fold.num_tracks):
            np.testing.assert_array_equal(fold.track(i), same.track(i))
    assert len(expected) == 12


def _tracklist_of(cache):
    from msagg.data.tracklist import TrackList

    return TrackList(name=cache.dataset, task=cache.task, label_names=cache.label_names,
                     track_ids=cache.track_ids.tolist(), sources=cache.sources.tolist(), labels=cache.labels,
                     split=cache.split.tolist(), split_info=cache.split_info, skipped=cache.skipped)


def test_a_track_the_store_lacks_is_named(corpus, runs):
    t = np.arange(16000) / 16000
    audio.write(corpus / "low" / "late.wav", 0.3 * np.sin(2 * np.pi * 300 * t), 16000)
    out = runs / "fold3"
    with pytest.raises(prepare.PrepareError) as err:
        run(config(corpus, fold=1, audio_from=str(runs / "audio")), out)
    message = str(err.value)
    assert message.startswith(f"{runs / 'audio' / 'cache' / 'index.h5'}: the audio store lacks track low/late "
                              f"({corpus / 'low' / 'late.wav'}) that corpus lists")
    assert "\n" not in message and not (out / "DONE").exists() and not (out / "cache").exists()


def test_the_store_must_be_a_finished_run_of_the_same_rate(tmp_path, corpus, runs):
    out = tmp_path / "fold"
    with pytest.raises(UnfinishedRunError, match=r"nowhere: no such prepare run folder"):
        run(config(corpus, fold=1, audio_from=str(tmp_path / "nowhere")), out)
    assert not out.exists()  # refused before the run folder was made
    (runs / "audio" / "DONE").rename(runs / "audio" / "DONE.kept")
    with pytest.raises(UnfinishedRunError, match=r"audio: this prepare run has not finished"):
        run(config(corpus, fold=2, audio_from=str(runs / "audio")), out)
    (runs / "audio" / "DONE.kept").rename(runs / "audio" / "DONE")
    with pytest.raises(prepare.PrepareError, match=r"same dataset and sample rate: it holds corpus at 8000 Hz, "
                                                   r"this run corpus at 16000 Hz"):
        run(config(corpus, fold=2, sample_rate=16000, audio_from=str(runs / "audio")), out)
    with pytest.raises(prepare.PrepareError, match=r"strict mode"):
        run(config(corpus, fold=2, strict=True, audio_from=str(runs / "audio")), tmp_path / "strict")


def test_audio_from_leaves_the_hash_of_other_runs_alone():
    # Golden hashes of configs written before audio_from existed: their run folders stay valid.
    assert config_hash(prepare.Config()) == "1d3a13823577"
    assert config_hash(prepare.Config(dataset="folder", source="x", folds=2, fold=1)) == "2f53102a41e6"
    assert "audio_from" not in config_dict(prepare.Config())
    assert config_dict(prepare.Config(audio_from="runs/a"))["audio_from"] == "runs/a"
    with pytest.raises(ConfigError, match=r"audio_from='': must be a prepare run folder"):
        prepare.Config(audio_from="")


def test_cli_offers_audio_from_to_prepare_only():
    assert "--audio-from" in CliRunner().invoke(main, ["prepare", "--help"]).output
    assert "--audio-from" not in CliRunner().invoke(main, ["crossval", "--help"]).output
