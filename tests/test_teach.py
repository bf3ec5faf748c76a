"""Unlabelled collections, teacher labels (msagg teach) and pretraining on soft targets."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf

from msagg.data.adapters import AdapterOptions, make_tracklist
from msagg.data.adapters.files import hashed_split
from msagg.data.formats.cache import AudioCache
from msagg.data.formats.teacher_labels import TeacherLabels, TeacherLabelsError, write_labels
from msagg.stages import prepare, pretrain
from msagg.stages.teacher import INSTALL_COMMAND
from msagg.stages.training import PretrainError
from msagg.data.errors import ConfigError
from msagg.stages.runs.pretrain_run import load_model
from msagg.stages.training import augment as augment_lib
from msagg.stages.training.crops import CropSequence
from msagg.stages.training.targets import TeacherTargets

SR = 8000
needs_musicnn = pytest.mark.skipif(importlib.util.find_spec("musicnn") is None,
                                   reason=f"musicnn is not installed ({INSTALL_COMMAND})")


def _collection(root, seconds=(4.0, 7.0, 5.0, 6.0)):
    """Audio files at several depths, with a hidden file and a text file that are not tracks."""
    rng = np.random.default_rng(0)
    paths = ["a.wav", "albums/one/b.flac", "albums/two/c.ogg", "d.wav"]
    for rel, sec in zip(paths, seconds):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(sec * SR)) / SR
        sf.write(path, (0.3 * np.sin(2 * np.pi * rng.uniform(100, 800) * t)).astype(np.float32), SR)
    (root / ".hidden.wav").write_bytes(b"not audio")
    (root / "albums" / "notes.txt").write_text("liner notes")
    return root


def test_unlabelled_lists_every_audio_file_at_any_depth(tmp_path):
    tl = make_tracklist("unlabelled", _collection(tmp_path / "music"), AdapterOptions())
    assert tl.track_ids == ["a", "albums/one/b", "albums/two/c", "d"]
    assert tl.task == "tags" and tl.label_names == [] and tl.labels.shape == (4, 0)
    assert set(tl.split) == {"train", "valid"} and tl.split_info["kind"] == "hashed"


def test_hashed_split_keeps_each_file_where_it_was_when_files_are_added():
    ids = [f"album/track{i:03d}" for i in range(200)]
    before = dict(zip(ids, hashed_split(ids)))
    more = ids + [f"new/track{i}" for i in range(50)]
    after = dict(zip(more, hashed_split(more)))
    assert all(after[i] == before[i] for i in ids)
    assert 0.04 < list(before.values()).count("valid") / len(ids) < 0.2
    assert hashed_split(["x", "y"]).count("valid") == 1  # never a split without valid or train tracks


def _prepared(tmp_path):
    out = tmp_path / "prep"
    config = prepare.Config(dataset="unlabelled", source=str(_collection(tmp_path / "music")), sample_rate=SR)
    prepare.run(config, out, progress=False)
    return out


def _labels_file(path, cache, patches_per_track):
    """Two fake taggers: "x" holds tags (rock, piano), "y" (rock, beat); patch p of track i = i + p / 10."""
    per_track = []
    for i in range(cache.num_tracks):
        base = np.array([[i + p / 10] * 4 for p in range(patches_per_track)], dtype=np.float32) / 10
        base[:, 1] += 0.5
        per_track.append(base)
    write_labels(path, teachers=["x_tagger", "y_tagger"], tag_names=["rock", "piano", "rock", "beat"],
                 teacher_of_tag=["x_tagger"] * 2 + ["y_tagger"] * 2, track_ids=list(cache.track_ids),
                 per_track=per_track, patch_seconds=1.0, hop_seconds=1.0, cache_config_hash=cache.config_hash)
    return TeacherLabels(path)


def test_vocabularies_and_time_aligned_targets(tmp_path):
    prep = _prepared(tmp_path)
    with AudioCache(prep) as cache:
        labels = _labels_file(tmp_path / "labels.h5", cache, patches_per_track=3)
        assert labels.vocabularies == ("x", "y", "both")
        tags, matrix = labels.vocabulary("both")
        assert tags == ["rock", "piano", "beat"]
        probs = labels.track_probs(1) @ matrix
        np.testing.assert_allclose(probs[:, 0], labels.track_probs(1)[:, [0, 2]].mean(axis=1))  # rock: both taggers
        with pytest.raises(TeacherLabelsError, match="no vocabulary 'z'"):
            labels.vocabulary("z")

        aligned = TeacherTargets(labels, cache, "x", "aligned")
        song = TeacherTargets(labels, cache, "x", "song")
        patch1 = labels.track_probs(2)[1, :2]
        np.testing.assert_allclose(aligned.crops([2], [SR], SR)[0], patch1, rtol=1e-6)  # exactly patch 1
        halves = labels.track_probs(2)[1:3, :2].mean(axis=0)
        np.testing.assert_allclose(aligned.crops([2], [SR + SR // 2], SR)[0], halves, rtol=1e-6)
        past_end = aligned.crops([2], [5 * SR], SR)[0]  # after the last patch: the nearest (last) one
        np.testing.assert_allclose(past_end, labels.track_probs(2)[2, :2], rtol=1e-6)
        np.testing.assert_allclose(song.crops([2], [SR], SR)[0], labels.track_probs(2)[:, :2].mean(axis=0), rtol=1e-6)
        assert aligned.segments(2, 2, SR).shape == (2, 2)

        seq = CropSequence(cache, cache.indices("train"), 2000, 4, 2, targets=aligned)
        x, y = seq[0]
        assert x.shape == (4, 2000) and y.shape == (4, 2) and np.all((y >= 0) & (y < 1)) and y.std() > 0


def test_teacher_labels_of_another_cache_are_refused(tmp_path):
    prep = _prepared(tmp_path)
    with AudioCache(prep) as cache:
        labels = _labels_file(tmp_path / "labels.h5", cache, patches_per_track=2)
        labels.cache_config_hash = "0123456789ab"
        with pytest.raises(TeacherLabelsError, match="belong to another cache"):
            TeacherTargets(labels, cache, "x", "aligned")


def test_pretrain_refuses_an_unlabelled_cache_without_teacher_labels(tmp_path):
    prep = _prepared(tmp_path)
    with pytest.raises(PretrainError, match="holds no labels.*msagg teach"):
        pretrain.run(pretrain.Config(cache=str(prep), **pretrain.PRESETS["tiny"]), tmp_path / "pre", progress=False)
    assert not (tmp_path / "pre" / "DONE").exists()


@needs_musicnn
def test_teach_then_pretrain_on_soft_targets(tmp_path):
    from msagg.stages import teach

    prep = _prepared(tmp_path)
    run = teach.run(teach.Config(cache=str(prep)), tmp_path / "teach", progress=False)
    labels = TeacherLabels(run)
    with AudioCache(prep) as cache:
        assert labels.track_ids == list(cache.track_ids)
        # a 4-s track at 16 kHz holds one whole 2.99-s patch; 7 s hold two
        assert [len(labels.track_probs(i)) for i in range(4)] == [1, 2, 1, 2]
    assert labels.probs.shape[1] == 100 and np.all((labels.probs >= 0) & (labels.probs <= 1))
    assert json.loads((run / "config.json").read_text())["teachers"] == ["MTT_musicnn", "MSD_musicnn"]
    assert teach.run(teach.Config(cache=str(prep)), run, progress=False) == run  # finished: a no-op

    config = pretrain.Config(cache=str(prep), teacher_labels=str(run), vocabulary="MTT",
                             **{**pretrain.PRESETS["tiny"], "scales": ("3^2",)})
    out = pretrain.run(config, tmp_path / "pre", progress=False, tensorboard=False)
    metrics = json.loads((out / "3^2" / "metrics.json").read_text())
    assert metrics["task"] == "tags" and len(metrics["label_names"]) == 50 and "guitar" in metrics["label_names"]
    assert json.loads((out / "metadata.json").read_text())["upstream"]["teacher_labels"]


def _labels_file_with_features(path, cache, patches_per_track, dim=6):
    """As ``_labels_file``, and features: patch p of track i = (i * 10 + p) * (1, 2, ..., dim)."""
    per_track, feats = [], []
    for i in range(cache.num_tracks):
        per_track.append(np.full((patches_per_track, 2), 0.25 + 0.1 * i, dtype=np.float32))
        feats.append(np.array([[(i * 10 + p) * (d + 1) for d in range(dim)] for p in range(patches_per_track)],
                              dtype=np.float16))
    write_labels(path, teachers=["x_tagger"], tag_names=["rock", "piano"], teacher_of_tag=["x_tagger"] * 2,
                 track_ids=list(cache.track_ids), per_track=per_track, patch_seconds=1.0, hop_seconds=1.0,
                 cache_config_hash=cache.config_hash, per_track_features=feats, features_source="x pools")
    return TeacherLabels(path)


def test_teacher_features_are_standardized_time_aligned_and_mixed_with_the_tags(tmp_path):
    prep = _prepared(tmp_path)
    with AudioCache(prep) as cache:
        labels = _labels_file_with_features(tmp_path / "labels.h5", cache, patches_per_track=3)
        assert labels.features.shape == (cache.num_tracks * 3, 6) and labels.features_source == "x pools"
        with pytest.raises(TeacherLabelsError, match="holds no teacher features.*features=true"):
            TeacherTargets(_labels_file(tmp_path / "plain.h5", cache, 3), cache, "x", "aligned", features=True)
        assert TeacherTargets(labels, cache, "x", "aligned").num_features == 0
        aligned = TeacherTargets(labels, cache, "x", "aligned", features=True)
        assert aligned.num_features == 6
        raw = labels.features.astype(np.float32)
        z = (raw - raw.mean(axis=0)) / raw.std(axis=0)
        np.testing.assert_allclose(aligned.crop_features([2], [SR], SR)[0], z[2 * 3 + 1], rtol=1e-5)  # patch 1
        halves = z[2 * 3 + 1:2 * 3 + 3].mean(axis=0)
        np.testing.assert_allclose(aligned.crop_features([2], [SR + SR // 2], SR)[0], halves, rtol=1e-5)
        song = TeacherTargets(labels, cache, "x", "song", features=True)
        np.testing.assert_allclose(song.crop_features([2], [SR], SR)[0], z[6:9].mean(axis=0), rtol=1e-5, atol=1e-6)

        seq = CropSequence(cache, cache.indices("train"), 2000, 4, 2, targets=aligned)
        x, (tags, feats) = seq[0]
        assert x.shape == (4, 2000) and tags.shape == (4, 2) and feats.shape == (4, 6)
        # mixup mixes tags and features with one weight per crop: with song targets, where a track's
        # standardized features are an affine function of its tag, mixed crops stay on that line
        every = np.arange(cache.num_tracks)
        line = np.polyfit(song.songs(every)[:, 0], song.crop_features(every, np.zeros_like(every), SR)[:, 0], 1)
        mixed = CropSequence(cache, cache.indices("train"), 2000, 8, 2, targets=song,
                             augment=augment_lib.Augment(mixup_alpha=0.4, mixup_prob=1.0))
        _, (tags2, feats2) = mixed[0]
        assert np.ptp(tags2[:, 0]) > 0 and not np.isin(tags2[:, 0], song.songs(np.arange(4))[:, 0]).all()
        np.testing.assert_allclose(feats2[:, 0], np.polyval(line, tags2[:, 0]), atol=1e-4)


@needs_musicnn
def test_pretrain_fits_teacher_features_and_saves_the_tagger_alone(tmp_path):
    from msagg.stages import teach

    prep = _prepared(tmp_path)
    teach_dir = teach.run(teach.Config(cache=str(prep), teachers=("MTT_musicnn",), features=True),
                          tmp_path / "teach", progress=False)
    labels = TeacherLabels(teach_dir)
    assert labels.features.shape == (len(labels.probs), 1506) and labels.features_source.startswith("MTT_musicnn")
    assert json.loads((teach_dir / "config.json").read_text())["features"] is True
    base = {**pretrain.PRESETS["tiny"], "scales": ("3^2",)}
    with pytest.raises(ConfigError, match="teacher_features=1 needs teacher labels.*teacher_features=0"):
        pretrain.Config(cache=str(prep), teacher_features=1.0, **base)
    config = pretrain.Config(cache=str(prep), teacher_labels=str(teach_dir), vocabulary="MTT",
                             teacher_features=0.5, **base)
    out = pretrain.run(config, tmp_path / "pre", progress=False, tensorboard=False)
    assert json.loads((out / "config.json").read_text())["teacher_features"] == 0.5
    model = load_model(out / "3^2" / "model.keras")
    assert len(model.outputs) == 1 and model.output_shape == (None, 50)  # the features head is not kept
    assert "teacher_features" not in [layer.name for layer in model.layers]
    history = (out / "3^2" / "history.csv").read_text()
    assert "nan" not in history.lower()
