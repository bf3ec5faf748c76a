"""The Python API (``msagg.load``, ``Family.embed``/``tag``, ``msagg.embed_file``) on a tiny family trained for real."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import msagg
from msagg.data.audio import AudioError, load, stream
from msagg.data.segments import Segmenter, segment, segment_starts
from msagg.stages.engines import taps
from tiny_family import SAMPLE_RATE

NAMES = [f"{scale}/{tap}" for scale in ("3^2", "4^2") for tap in ("-3", "-2", "-1")]
LENGTHS = {"3^2": 27, "4^2": 64}


def _wave(num_samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SAMPLE_RATE
    return (0.4 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(num_samples)).astype(np.float32)


@pytest.fixture(scope="module")
def family(tiny_family):
    return msagg.load(tiny_family)


def test_import_msagg_and_its_api_names_load_no_backend():
    code = ("import json, sys, msagg; msagg.load, msagg.embed_file, msagg.Family; "
            "print(json.dumps([m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []
    assert {"load", "embed_file", "tag_file", "Family"} <= set(dir(msagg))


def test_the_api_keeps_the_backends_start_up_notices_off_stderr(tiny_family):
    code = (f"import numpy as np, msagg; f = msagg.load({str(tiny_family)!r}); w = np.zeros(2000, np.float32); "
            f"f.tag(w, {SAMPLE_RATE}); f.embed(w, {SAMPLE_RATE}); print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]
    for notice in ("cuda drivers", "cuInit", "oneDNN custom operations"):
        assert notice not in res.stderr, res.stderr[-2000:]


def test_embed_gives_every_scale_and_tap_as_extract_computes_them(family, tiny_family):
    wave = _wave(1000)
    song = family.embed(wave, SAMPLE_RATE, frames=True)
    assert song.names == NAMES == family.names and all(type(name) is str for name in song.names)
    reference = taps.song_features([wave], tiny_family)  # what extract writes to features.h5
    for name in NAMES:
        scale, tap = name.split("/")
        assert song.vectors[name].dtype == np.float32 and song.vectors[name].shape == reference[scale][tap][0].shape
        np.testing.assert_allclose(song.vectors[name], reference[scale][tap][0], rtol=1e-5, atol=1e-6)
        # one frame per "cover" segment, starting where extract's segments start
        starts = segment_starts(1000, LENGTHS[scale], "cover")
        assert song.frames[name].shape == (len(starts), family.channels()[name])
        np.testing.assert_allclose(song.frames[name].mean(axis=0), song.vectors[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(song.frame_times(name), starts / SAMPLE_RATE)
    assert song.num_segments == {"3^2": 38, "4^2": 16} and song.duration_sec == 0.5
    assert song.concatenated().shape == (sum(family.dims().values()),)


def test_embed_pools_and_cuts_as_asked(family):
    wave = _wave(1000)
    meanstd = family.embed(wave, SAMPLE_RATE, song_pool="meanstd", segments="drop")
    assert meanstd.frames is None and meanstd.times is None
    assert meanstd.num_segments == {"3^2": 37, "4^2": 15}
    assert {n: v.shape[0] for n, v in meanstd.vectors.items()} == family.dims("meanstd")
    with pytest.raises(ValueError, match="song_pool must be one of"):
        family.embed(wave, SAMPLE_RATE, song_pool="median")


def test_embed_file_reads_in_blocks_what_an_array_gives(family, tiny_family, tmp_path):
    rng = np.random.default_rng(3)
    stereo = (0.3 * rng.standard_normal((5003, 2))).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 2 * SAMPLE_RATE, subtype="FLOAT")  # another rate: resampled to the family's
    wave = load(path, SAMPLE_RATE)
    assert np.array_equal(np.concatenate(list(stream(path, SAMPLE_RATE, block_frames=700))), wave)
    from_file = family.embed_file(path, frames=True)
    from_array = family.embed(*sf.read(path, dtype="float32"), frames=True)
    for name in NAMES:
        np.testing.assert_allclose(from_file.vectors[name], from_array.vectors[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(from_file.frames[name], from_array.frames[name], rtol=1e-5, atol=1e-6)
    cached = msagg.embed_file(path, tiny_family)
    for name in NAMES:
        np.testing.assert_allclose(cached.vectors[name], from_file.vectors[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block", [1, 5, 27, 100, 10_000])
@pytest.mark.parametrize("mode", ["cover", "drop"])
@pytest.mark.parametrize("num_samples", [0, 10, 27, 28, 100, 1000])
def test_segmenter_cuts_blocks_as_segment_cuts_the_whole(block, mode, num_samples):
    wave = np.arange(num_samples, dtype=np.float32)
    cut = Segmenter(27, mode)
    got = [(start, seg.copy()) for lo in range(0, num_samples, block) for start, seg in cut.push(wave[lo:lo + block])]
    got += cut.finish()
    assert [start for start, _ in got] == list(segment_starts(num_samples, 27, mode))
    np.testing.assert_array_equal(np.stack([seg for _, seg in got]), segment(wave, 27, mode))


def test_tag_gives_str_labels_song_scores_and_scores_over_time(family, tiny_family):
    labels = json.loads((tiny_family / "3^2" / "metrics.json").read_text())["label_names"]
    wave = _wave(1000)
    tags = family.tag(wave, SAMPLE_RATE, over_time=True)
    assert tags.labels == labels == family.labels and all(type(k) is str for k in tags.scores)
    assert all(0.0 <= p <= 1.0 for p in tags.scores.values()) and tags.task == "tags"
    # windows as long as the longest input (4^2: 64 samples), one per whole window
    assert tags.over_time.shape == (1000 // 64, len(labels)) and tags.over_time.dtype == np.float32
    np.testing.assert_allclose(tags.times, np.arange(1000 // 64) * 64 / SAMPLE_RATE)
    assert tags.window_sec == 64 / SAMPLE_RATE
    assert [name for name, _ in tags.top(3)] == sorted(tags.scores, key=lambda k: -tags.scores[k])[:3]
    song_only = family.tag(wave, SAMPLE_RATE)
    assert song_only.over_time is None and song_only.scores == pytest.approx(tags.scores)


def test_one_scale_scores_over_time_are_its_segments_scores(tiny_family):
    family = msagg.load(tiny_family, scales=("3^2",))
    wave = _wave(700, seed=1)
    tags = family.tag(wave, SAMPLE_RATE, over_time=True)
    model = family.end_to_end_models()["3^2"]
    expected = np.asarray(model.predict_on_batch(segment(wave, 27, "drop")))
    np.testing.assert_allclose(tags.over_time, expected, rtol=1e-4, atol=1e-5)
    assert list(tags.scores.values()) == pytest.approx(expected.mean(axis=0), abs=1e-5)
    np.testing.assert_allclose(tags.times, segment_starts(700, 27) / SAMPLE_RATE)


def test_bad_input_is_refused_with_its_reason(family, tmp_path):
    with pytest.raises(AudioError, match=r"audio: too short to score: 0.02 s long, at least 0.032 s needed "
                                         r"\(the 4\^2 model's input\)"):
        family.tag(_wave(40), SAMPLE_RATE)
    with pytest.raises(ValueError, match="expected float samples"):
        family.embed((_wave(100) * 32767).astype(np.int16), SAMPLE_RATE)
    with pytest.raises(ValueError, match=r"got shape \(2, 100\); transpose"):
        family.embed(np.zeros((2, 100), np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="non-finite"):
        family.embed(np.full(100, np.nan, np.float32), SAMPLE_RATE)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        family.embed_file(tmp_path / "empty.wav")
