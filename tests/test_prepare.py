"""msagg.stages.prepare: decode a track list into a sharded cache, skip or refuse bad files, no-op re-runs, resume."""

import csv
import dataclasses
import json
import pickle
import re

import numpy as np
import pytest

from msagg.data import adapters, audio
from msagg.data.adapters import AdapterOptions
from msagg.data.formats.cache import AudioCache
from msagg.data.errors import ConfigError
from msagg.data.tracklist import TrackList
from msagg.pipeline.config import resolve
from msagg.data.formats.cache_writer import read_shard_summary
from msagg.stages.engines import decode
from msagg.stages import prepare
from msagg.stages.runs.folder import RunConflictError, config_dict

RATE = 8000  # cache rate; the files are written at 16 kHz so every track is resampled


def write_corpus(folder, num_good=5, corrupt_at=None, empty_at=None):
    """Writes sine-tone wav files (stereo for odd indices) and returns (sources, labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources, classes = [], []
    for i in range(num_good + (corrupt_at is not None) + (empty_at is not None)):
        path = folder / f"track {i}.wav"
        if i == corrupt_at:
            path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnonsense" * 8)
        elif i == empty_at:
            path.write_bytes(b"")
        else:
            t = np.arange(int(16000 * (0.3 + 0.1 * i))) / 16000
            tone = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t)
            audio.write(path, np.stack([tone, tone], axis=1) if i % 2 else tone, 16000)
        sources.append(str(path))
        classes.append(i % 2)
    return sources, classes


def make_tracklist(sources, classes, skipped=()):
    n = len(sources)
    return TrackList(
        name="folder", task="classes", label_names=["even", "odd"],
        track_ids=[f"id{i}" for i in range(n)], sources=list(sources),
        labels=np.eye(2, dtype=np.uint8)[classes],
        split=["train", "train", "valid", "test"] * (n // 4) + ["train"] * (n % 4),
        split_info={"kind": "test"}, skipped=list(skipped),
    )


def config(tmp_path, **changes):
    return prepare.Config(**{"dataset": "folder", "source": str(tmp_path / "corpus"), "sample_rate": RATE, **changes})


def run(cfg, out, tracklist, **kwargs):
    kwargs.setdefault("workers", 1)
    return prepare.run(cfg, out, progress=False, tracklist=tracklist, **kwargs)


def test_end_to_end_skips_bad_files_with_reasons(tmp_path):
    sources, classes = write_corpus(tmp_path / "corpus", num_good=5, corrupt_at=2, empty_at=4)
    tracklist = make_tracklist(sources, classes, skipped=[("listed/missing.wav", "no such file")])
    out = tmp_path / "run"
    path = run(config(tmp_path), out, tracklist)
    assert path == out / "cache"
    good = [i for i in range(7) if i not in (2, 4)]
    with AudioCache(path) as cache:
        assert cache.track_ids.tolist() == [f"id{i}" for i in good]
        assert cache.sources.tolist() == [sources[i] for i in good]
        np.testing.assert_array_equal(cache.labels, tracklist.labels[good])
        assert cache.split.tolist() == [tracklist.split[i] for i in good]
        assert (cache.sample_rate, cache.task, cache.dataset) == (RATE, "classes", "folder")
        assert cache.config_hash == json.loads((out / "DONE").read_text())["config_hash"]
        for row, i in enumerate(good):
            expected = audio.load(sources[i], RATE)
            assert len(expected) == int(16000 * (0.3 + 0.1 * i)) // 2
            np.testing.assert_allclose(cache.track(row), expected, atol=1.5 / 32768)
        reasons = dict(cache.skipped)
    assert list(reasons) == ["listed/missing.wav", sources[2], sources[4]]
    assert reasons[sources[2]].startswith("cannot decode: corrupt or unsupported audio")
    assert reasons[sources[4]] == "empty file (0 bytes)"
    with open(out / "skipped.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["source", "reason"] and rows[1:] == [list(item) for item in reasons.items()]
    done = json.loads((out / "DONE").read_text())
    assert (done["num_tracks"], done["num_skipped"], done["num_listed"], done["num_decoded_this_run"]) == (5, 3, 7, 5)
    assert done["files_per_sec"] > 0 and done["realtime_factor"] > 0 and done["cache_bytes"] > 0
    assert done["num_shards"] == 7  # a corpus this small: one track per shard (MIN_SHARDS)
    assert sorted(p.name for p in out.iterdir()) == ["DONE", "cache", "config.json", "metadata.json", "skipped.csv"]
    assert sorted(p.name for p in path.iterdir()) == ["index.h5", "plan.json"] + [f"shard-{i:05d}.h5" for i in range(7)]


def test_process_pool_gives_the_same_cache(tmp_path):
    sources, classes = write_corpus(tmp_path / "corpus", num_good=6, corrupt_at=3)
    tracklist = make_tracklist(sources, classes)
    one = run(config(tmp_path), tmp_path / "one", tracklist, workers=1)
    two = run(config(tmp_path), tmp_path / "two", tracklist, workers=2)
    with AudioCache(one) as a, AudioCache(two) as b:
        assert a.track_ids.tolist() == b.track_ids.tolist() and a.skipped == b.skipped
        np.testing.assert_array_equal(a.lengths, b.lengths)
        for i in range(a.num_tracks):
            np.testing.assert_array_equal(a.track(i), b.track(i))
    assert json.loads((tmp_path / "two" / "DONE").read_text())["workers"] == 2


def test_strict_mode_names_the_file_and_keeps_finished_tracks(tmp_path):
    sources, classes = write_corpus(tmp_path / "corpus", num_good=4, corrupt_at=2)
    out = tmp_path / "run"
    message = r"track 2\.wav: cannot decode: corrupt or unsupported audio.*strict mode"
    with pytest.raises(prepare.PrepareError, match=message):
        run(config(tmp_path, strict=True), out, make_tracklist(sources, classes))
    assert not (out / "DONE").exists() and not (out / "cache" / "index.h5").exists()
    assert sorted(p.name for p in (out / "cache").glob("*.h5")) == ["shard-00000.h5", "shard-00001.h5"]
    assert not [p for p in (out / "cache").iterdir() if p.name.startswith(".")]  # no temp of shard 2 left


def test_strict_mode_refuses_files_skipped_while_listing(tmp_path):
    sources, classes = write_corpus(tmp_path / "corpus", num_good=2)
    tracklist = make_tracklist(sources, classes, skipped=[("a/missing.wav", "no such file"), ("b.wav", "x")])
    with pytest.raises(prepare.PrepareError, match=r"a/missing\.wav: no such file \(and 1 more\)"):
        run(config(tmp_path, strict=True), tmp_path / "run", tracklist)


def test_resume_after_interruption_does_not_decode_again(tmp_path):
    # A strict run stops at the corrupt track 3, as a kill would, with tracks 0-2 in shards 0-2.
    sources, classes = write_corpus(tmp_path / "corpus", num_good=5, corrupt_at=3)
    tracklist = make_tracklist(sources, classes)
    cfg, out = config(tmp_path, strict=True), tmp_path / "run"
    with pytest.raises(prepare.PrepareError):
        run(cfg, out, tracklist)
    kept = {i: audio.load(sources[i], RATE) for i in range(3)}
    # The user fixes track 3; tracks 0-2 can no longer be decoded, so they must come from their shards.
    audio.write(sources[3], np.zeros(4000), 16000)
    for i in range(3):
        (tmp_path / "corpus" / f"track {i}.wav").unlink()
    path = run(cfg, out, tracklist)
    with AudioCache(path) as cache:
        assert cache.num_tracks == 6 and cache.skipped == []
        for i, wave in kept.items():
            np.testing.assert_allclose(cache.track(i), wave, atol=1.5 / 32768)
        np.testing.assert_array_equal(cache.track(3), np.zeros(2000))
    assert json.loads((out / "DONE").read_text())["num_decoded_this_run"] == 3


def test_resume_over_another_listing_decodes_again(tmp_path):
    sources, classes = write_corpus(tmp_path / "corpus", num_good=3, corrupt_at=1)
    cfg, out = config(tmp_path, strict=True), tmp_path / "run"
    with pytest.raises(prepare.PrepareError):
        run(cfg, out, make_tracklist(sources, classes))
    assert (out / "cache" / "shard-00000.h5").is_file()  # holds track 0
    # Same config, but the folder now lists other files: shard 0 must not be taken for the new track 0.
    path = run(cfg, out, make_tracklist(sources[2:], classes[2:]))
    with AudioCache(path) as cache:
        assert cache.sources.tolist() == sources[2:]
        np.testing.assert_allclose(cache.track(0), audio.load(sources[2], RATE), atol=1.5 / 32768)


def test_rerun_is_a_no_op_and_another_config_is_refused(tmp_path):
    sources, classes = write_corpus(tmp_path / "corpus", num_good=3)
    tracklist = make_tracklist(sources, classes)
    out = tmp_path / "run"
    path = run(config(tmp_path), out, tracklist)
    stamp = path.stat().st_mtime_ns
    for source in sources:  # a second decode would now fail
        (tmp_path / "corpus").joinpath(source.rsplit("/", 1)[1]).unlink()
    assert run(config(tmp_path), out, tracklist) == path
    assert path.stat().st_mtime_ns == stamp
    with pytest.raises(RunConflictError, match="another config"):
        run(config(tmp_path, sample_rate=16000), out, tracklist)


def test_every_track_failing_is_an_error(tmp_path):
    sources, classes = write_corpus(tmp_path / "corpus", num_good=0, corrupt_at=0, empty_at=1)
    out = tmp_path / "run"
    with pytest.raises(prepare.PrepareError, match=r"none of the 2 tracks could be decoded \(first: .*track 0\.wav"):
        run(config(tmp_path), out, make_tracklist(sources, classes))
    assert (out / "skipped.csv").read_text().count("\n") == 3
    assert not (out / "DONE").exists()


def test_tracklist_must_match_the_config(tmp_path):
    sources, classes = write_corpus(tmp_path / "corpus", num_good=1)
    with pytest.raises(ValueError, match="does not match config dataset 'csv'"):
        prepare.run(prepare.Config(dataset="csv"), tmp_path / "run", tracklist=make_tracklist(sources, classes),
                    progress=False)


@pytest.mark.parametrize("workers", [0, -1, 1.5])
def test_bad_workers_refused_before_anything_is_written(tmp_path, workers):
    sources, classes = write_corpus(tmp_path / "corpus", num_good=1)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        run(config(tmp_path), tmp_path / "run", make_tracklist(sources, classes), workers=workers)
    assert not (tmp_path / "run").exists()


def test_presets_and_defaults_are_valid():
    assert prepare.Config().sample_rate == 22050 and prepare.Config().dataset == "synth-tags"
    for values in prepare.PRESETS.values():
        prepare.Config(**values)
    assert prepare.Config(**prepare.PRESETS["tiny"]).num_tracks == 24
    # The options an adapter gets from a config; generated datasets fill the corpus size left None.
    config = prepare.Config(dataset="folder", source="x", fold_from_name=r"^(\d)-", fold=1, top_k=50)
    options = dataclasses.asdict(config.adapter_options())
    assert options.pop("fold_valid") == "next"
    assert options == {"num_tracks": None, "seed": None, "min_sec": None, "max_sec": None, "soundfont": None,
                       "soundfont_sha256": None, "split_seed": 0, "folds": None, "fold": 1, "fold_from_name": r"^(\d)-",
                       "top_k": 50, "split": None}
    synth = adapters.get_adapter("synth-tags").with_defaults(prepare.Config().adapter_options())
    assert (synth.num_tracks, synth.seed, synth.min_sec, synth.max_sec) == (300, 0, 10.0, 30.0)


def test_config_is_the_adapter_options_plus_its_own_keys():
    adapter_fields = {f.name: f for f in dataclasses.fields(AdapterOptions)}
    config_fields = {f.name: f for f in dataclasses.fields(prepare.Config)}
    assert set(config_fields) == set(adapter_fields) | {"dataset", "source", "sample_rate", "strict", "audio_from",
                                                        "shard_mb", "engine", "address"}
    for name, field in adapter_fields.items():
        assert config_fields[name].default == field.default and field.metadata["help"], name
    # The corpus size is no setting of a folder dataset's config; the synth adapter has the defaults.
    folder = prepare.Config(dataset="folder", source="x")
    assert (folder.num_tracks, folder.seed, folder.min_sec, folder.max_sec) == (None, None, None, None)
    # --set and config files take every adapter option, type-checked.
    sets = ["dataset=folder", "source=x", "split_seed=3", "folds=4", "fold=2", "top_k=5", "fold_valid=slice",
            "num_tracks=9"]
    config = resolve(prepare.Config, sets=sets)
    assert (config.split_seed, config.folds, config.fold, config.top_k, config.fold_valid) == (3, 4, 2, 5, "slice")
    with pytest.raises(ConfigError, match="folds='x': expected int"):
        resolve(prepare.Config, sets=["folds=x"])


@pytest.mark.parametrize(
    "changes, message",
    [({"dataset": ""}, "dataset=''"),
     ({"num_tracks": 0}, "num_tracks=0"),
     ({"seed": -1}, "seed=-1"),
     ({"min_sec": 0}, "min_sec=0"),
     ({"min_sec": 5.0, "max_sec": 4.0}, "max_sec=4.0"),
     ({"sample_rate": 22050.5}, "sample_rate=22050.5"),
     ({"folds": 1, "fold": 1}, "folds=1"),
     ({"folds": 5, "fold": 0}, "fold=0: must be between 1 and folds=5"),
     ({"folds": 5}, "fold=None: must say which fold"),
     ({"fold": 2}, "fold=2: needs folds"),
     ({"fold_from_name": "^(\\d", "fold": 1}, "not a valid regular expression"),
     ({"fold_from_name": "^\\d-", "fold": 1}, "needs a group"),
     ({"folds": 5, "fold": 1, "fold_from_name": "^(\\d)-"}, "not both"),
     ({"top_k": 0}, "top_k=0"),
     ({"split": "official-ish"}, "split='official-ish'"),
     ({"strict": "yes"}, "strict='yes'")],
)
def test_config_validation_names_the_bad_value(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        prepare.Config(**changes)


def test_esc10_fold_alone_uses_the_official_folds():
    # esc10's adapter reads the folds from the file names; other datasets need folds or a pattern.
    assert prepare.Config(dataset="esc10", source="x", fold=3).fold == 3
    with pytest.raises(ValueError, match="fold.*needs folds"):
        prepare.Config(dataset="folder", source="x", fold=3)


# --- the sharded cache -------------------------------------------------------------------------


def synth_tracklist(n, seconds=10.0):
    return TrackList(name="synth-tags", task="tags", label_names=["a"], track_ids=[f"t{i}" for i in range(n)],
                     sources=[f"synth:0:{i}:{seconds}:{seconds}" for i in range(n)],
                     labels=np.zeros((n, 1), np.uint8), split=["train"] * n)


def test_the_plan_cuts_consecutive_tracks_by_size_and_spreads_small_corpora():
    # 10 s at 8 kHz = 160 kB of int16 a track: 6 tracks fit 1 MB.
    plan = decode.plan_shards(synth_tracklist(1000), sample_rate=8000, shard_mb=1)
    assert (plan.tracks_per_shard, plan.num_shards) == (6, 167)
    assert plan.tracks(0) == range(0, 6) and plan.tracks(166) == range(996, 1000)
    # A corpus too small to fill MIN_SHARDS shards of that size is cut into MIN_SHARDS shards.
    assert decode.plan_shards(synth_tracklist(64), sample_rate=8000, shard_mb=1).tracks_per_shard == 2
    assert decode.plan_shards(synth_tracklist(5), sample_rate=8000, shard_mb=1000).num_shards == 5
    # Every shard holds at least one track, however small shard_mb.
    assert decode.plan_shards(synth_tracklist(1000), sample_rate=8000, shard_mb=0.001).tracks_per_shard == 1
    # Deterministic: the same listing gives the same plan; another listing another digest and id.
    again = decode.plan_shards(synth_tracklist(1000), sample_rate=8000, shard_mb=1)
    assert again == plan and again.plan_id == plan.plan_id
    other = decode.plan_shards(synth_tracklist(1000, seconds=11.0), sample_rate=8000, shard_mb=1)
    assert other.listing_sha256 != plan.listing_sha256 and other.plan_id != plan.plan_id
    # Files are sized from their headers; unreadable ones fall back to DEFAULT_TRACK_SEC.
    assert decode.estimate_track_seconds(["/nowhere/a.wav"]) == decode.DEFAULT_TRACK_SEC


def test_files_are_sized_from_their_headers(tmp_path):
    sources, _ = write_corpus(tmp_path / "corpus", num_good=5)  # 0.3-0.7 s
    assert decode.estimate_track_seconds(sources) == pytest.approx(0.5)


def test_shard_mb_is_hashed_only_when_not_the_default():
    assert "shard_mb" not in config_dict(prepare.Config())
    assert config_dict(prepare.Config(shard_mb=1024))  == config_dict(prepare.Config())
    assert config_dict(prepare.Config(shard_mb=64))["shard_mb"] == 64
    for bad in (0, -1, float("nan"), "big", True):
        with pytest.raises(ConfigError, match="shard_mb"):
            prepare.Config(shard_mb=bad)


def test_decode_shard_is_a_plain_function(tmp_path):
    """What another engine runs: picklable arguments, one shard file written, a JSON-ready summary."""
    sources, classes = write_corpus(tmp_path / "corpus", num_good=4, corrupt_at=1)
    tracklist = make_tracklist(sources, classes)
    plan = decode.plan_shards(tracklist, sample_rate=RATE, shard_mb=1)
    assert plan.tracks_per_shard == 1
    plan = dataclasses.replace(plan, tracks_per_shard=3)
    assert pickle.loads(pickle.dumps(plan)) == plan
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    summary = decode.decode_shard(str(cache_dir), plan, 0, sources[:3])
    assert json.loads(json.dumps(summary)) == summary
    assert (summary["shard"], summary["first"], summary["end"], summary["rows"], summary["written"]) == (0, 0, 3, [0, 2],
                                                                                                        True)
    assert summary["failed"][0][0] == 1 and summary["failed"][0][1].startswith("cannot decode")
    assert sorted(p.name for p in cache_dir.iterdir()) == ["shard-00000.h5"]
    assert read_shard_summary(cache_dir / "shard-00000.h5")["failed"] == summary["failed"]
    # Strict: nothing is written, and the summary says which track stopped it.
    strict = decode.decode_shard(cache_dir, plan, 1, sources[3:], strict=True)
    assert strict["written"] is True and strict["rows"] == [3, 4]
    (cache_dir / "shard-00000.h5").unlink()
    stopped = decode.decode_shard(cache_dir, plan, 0, sources[:3], strict=True)
    assert (stopped["written"], stopped["failed"][0][0]) == (False, 1) and not (cache_dir / "shard-00000.h5").exists()
    assert decode.decode_shard(cache_dir, plan, 0, sources[:3], stop=lambda: True)["written"] is False
    assert sorted(p.name for p in cache_dir.iterdir()) == ["shard-00001.h5"]


def test_failed_tracks_are_recorded_in_their_shard_and_not_tried_again(tmp_path, monkeypatch):
    sources, classes = write_corpus(tmp_path / "corpus", num_good=4, corrupt_at=1)
    tracklist = make_tracklist(sources, classes)
    out = tmp_path / "run"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill between the last shard and the index would

    with monkeypatch.context() as m:
        m.setattr(prepare, "write_index", killed)
        with pytest.raises(KeyboardInterrupt):
            run(config(tmp_path), out, tracklist)
    audio.write(sources[1], np.zeros(1600), 16000)  # the bad file is fixed, but its shard is finished
    path = run(config(tmp_path), out, tracklist)
    done = json.loads((out / "DONE").read_text())
    assert (done["num_decoded_this_run"], done["num_skipped"]) == (0, 1)
    with AudioCache(path) as cache:
        assert cache.skipped[0][0] == sources[1] and cache.skipped[0][1].startswith("cannot decode")
    # A strict run keeps no shard that recorded a failure (it must meet the file again).
    plan = decode.ShardPlan(**json.loads((path / "plan.json").read_text()))
    assert sorted(decode.finished_shards(path, plan)) == [0, 1, 2, 3, 4]
    assert sorted(decode.finished_shards(path, plan, strict=True)) == [0, 2, 3, 4]
    assert not (path / "shard-00001.h5").exists()


def test_the_disk_never_holds_more_than_the_cache(tmp_path, monkeypatch):
    """Peak disk: watched after every track written (and the files there then), never above the finished folder."""
    rng = np.random.default_rng(3)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sources = []
    for i in range(40):
        sources.append(str(audio.write(corpus / f"n{i}.wav", 0.1 * rng.standard_normal(int(RATE * (1 + i % 3))), RATE)))
    tracklist = make_tracklist(sources, [i % 2 for i in range(40)])
    out = tmp_path / "run"
    seen = []

    def usage():
        files = [p for p in out.rglob("*") if p.is_file()]
        seen.append((sum(p.stat().st_size for p in files), {str(p.relative_to(out)) for p in files}))

    real = decode.decode_shard

    def watched(*args, on_track=None, **kwargs):
        def each(row, num_samples):
            usage()
            if on_track is not None:
                on_track(row, num_samples)

        return real(*args, on_track=each, **kwargs)

    monkeypatch.setattr(decode, "decode_shard", watched)
    path = run(config(tmp_path, shard_mb=0.1), out, tracklist)  # 2 tracks a shard (at most 40 / MIN_SHARDS)
    usage()
    final, names = seen.pop()
    assert len(seen) == 40 and json.loads((out / "DONE").read_text())["num_shards"] == 20
    assert max(size for size, _ in seen) <= final
    allowed = re.compile(r"^(config\.json|metadata\.json|\.lock|cache/plan\.json|cache/shard-\d{5}\.h5|"
                         r"cache/\.shard-\d{5}\.tmp-\d+\.h5)$")
    assert all(allowed.match(name) for _, files in seen for name in files)  # no parts, no second copy
    assert any(".tmp-" in name for _, files in seen for name in files)  # shards were written in place
    with AudioCache(path) as cache:
        assert [(r.first, r.end) for r in cache.shards] == [(i, i + 2) for i in range(0, 40, 2)]
        for i, source in enumerate(sources):
            np.testing.assert_allclose(cache.track(i), audio.load(source, RATE), atol=1.5 / 32768)


def test_runs_of_an_older_msagg_keep_their_cache_h5_or_resume_into_shards(tmp_path):
    """A finished schema-1 run is still a finished run (same config hash); an unfinished one's
    parts/ are dropped and the run decodes into cache/."""
    from legacy_cache import write_cache_v1
    from msagg.stages.runs.folder import RunFolder

    sources, classes = write_corpus(tmp_path / "corpus", num_good=3)
    tracklist = make_tracklist(sources, classes)
    cfg = config(tmp_path)
    old = tmp_path / "old"
    with RunFolder(old, "prepare", cfg) as folder:
        folder.start()
        write_cache_v1(old / "cache.h5", tracklist, [audio.load(s, RATE) for s in sources], sample_rate=RATE,
                       config_hash=folder.hash)
        folder.finish({})
    assert run(cfg, old, tracklist) == old / "cache.h5"
    with AudioCache(old) as cache:
        assert cache.schema_version == 1 and cache.num_tracks == 3
    unfinished = tmp_path / "unfinished"
    with RunFolder(unfinished, "prepare", cfg) as folder:
        folder.start()
    (unfinished / "parts").mkdir()
    (unfinished / "parts" / "000000.npy").write_bytes(b"an older msagg's part")
    path = run(cfg, unfinished, tracklist)
    assert path == unfinished / "cache" and not (unfinished / "parts").exists()
    with AudioCache(path) as new, AudioCache(old) as before:
        for i in range(3):
            np.testing.assert_array_equal(new.track(i), before.track(i))
