"""stages.prepare: decode a track list into cache.h5, skip or refuse bad files, no-op re-runs, resume."""

import csv
import dataclasses
import json
import re

import numpy as np
import pytest

from data import adapters, audio
from data.adapters import AdapterOptions
from data.cache import AudioCache
from data.errors import ConfigError
from data.tracklist import TrackList
from pipeline.config import resolve
from stages import prepare
from stages.runfolder import RunConflictError

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
    assert path == out / "cache.h5"
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
    assert not (out / "parts").exists()
    assert sorted(p.name for p in out.iterdir()) == ["DONE", "cache.h5", "config.json", "metadata.json", "skipped.csv"]


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
    assert not (out / "DONE").exists() and not (out / "cache.h5").exists()
    assert sorted(p.name for p in (out / "parts").glob("*.npy")) == ["000000.npy", "000001.npy"]
    assert not list((out / "parts").glob("*.err"))


def test_strict_mode_refuses_files_skipped_while_listing(tmp_path):
    sources, classes = write_corpus(tmp_path / "corpus", num_good=2)
    tracklist = make_tracklist(sources, classes, skipped=[("a/missing.wav", "no such file"), ("b.wav", "x")])
    with pytest.raises(prepare.PrepareError, match=r"a/missing\.wav: no such file \(and 1 more\)"):
        run(config(tmp_path, strict=True), tmp_path / "run", tracklist)


def test_resume_after_interruption_does_not_decode_again(tmp_path):
    # A strict run stops at the corrupt track 3, as a kill would, with tracks 0-2 in parts/.
    sources, classes = write_corpus(tmp_path / "corpus", num_good=5, corrupt_at=3)
    tracklist = make_tracklist(sources, classes)
    cfg, out = config(tmp_path, strict=True), tmp_path / "run"
    with pytest.raises(prepare.PrepareError):
        run(cfg, out, tracklist)
    kept = {i: audio.load(sources[i], RATE) for i in range(3)}
    # The user fixes track 3; tracks 0-2 can no longer be decoded, so they must come from parts/.
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
    assert (out / "parts" / "000000.npy").is_file()  # holds track 0
    # Same config, but the folder now lists other files: part 0 must not be taken for the new track 0.
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
    assert set(config_fields) == set(adapter_fields) | {"dataset", "source", "sample_rate", "strict", "audio_from"}
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
