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
