"""Tests for data/synth_gm.py and data/soundfont.py: parameters and tags, SoundFont rendering, prepare end to end."""

import dataclasses
import hashlib
import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest

from msagg.data import adapters
from msagg.data.synth import soundfont, gm as synth_gm
from msagg.data.adapters import AdapterOptions
from msagg.data.formats.cache import AudioCache
from msagg.data.errors import ConfigError, MsaggError
from msagg.data.synth.soundfont import SoundFontError
from msagg.data.synth.music import SynthSourceError
from msagg.stages import prepare
from msagg.stages.runs.folder import RunConflictError

SR = 8000  # low rate keeps the rendering tests fast
HAVE_TINYSOUNDFONT = importlib.util.find_spec("tinysoundfont") is not None
HAVE_DEFAULT_SOUNDFONT = importlib.util.find_spec("pretty_midi") is not None
needs_renderer = pytest.mark.skipif(
    not (HAVE_TINYSOUNDFONT and HAVE_DEFAULT_SOUNDFONT),
    reason="needs tinysoundfont (make venv installs it with --no-deps) and pretty_midi's TimGM6mb.sf2",
)


@pytest.fixture(scope="module")
def corpus():
    return synth_gm.describe(1500, seed=0)


# ---------------------------------------------------------------------------------------------
# Parameters and labels (no audio)


# sha256 of repr(describe(50, 3)): pins every parameter draw. A deliberate change of the corpus
# updates it (and says so in its commit: every synth-gm cache changes with it).
GOLDEN_DESCRIBE_SHA256 = "1b32dcfd6fe6bf3ef928cdc4143a60e6ec7e250420314e8232901215d1750adf"


def test_described_parameters_are_identical_to_the_recorded_golden_hash():
    assert hashlib.sha256(repr(synth_gm.describe(50, 3)).encode()).hexdigest() == GOLDEN_DESCRIBE_SHA256


def test_describe_is_deterministic_and_each_track_independent_of_the_corpus_size():
    assert synth_gm.describe(10, seed=4) == synth_gm.describe(10, seed=4)
    assert synth_gm.describe(30, seed=4)[:10] == synth_gm.describe(10, seed=4)
    assert synth_gm.describe(10, seed=4) != synth_gm.describe(10, seed=5)


def test_source_strings_round_trip_with_and_without_a_soundfont():
    source = synth_gm.source_string(12, 5, 0.1 + 0.2, 7)
    assert source == "synthgm:12:5:0.30000000000000004:7.0"
    assert synth_gm.parse_source(source) == (12, 5, 0.1 + 0.2, 7.0, None)
    track = synth_gm.describe(6, seed=12, min_sec=0.1 + 0.2, max_sec=7)[5]
    assert synth_gm.track_from_source(source) == track
    path = "/sf/a:b.sf2"  # a path may hold colons
    named = synth_gm.source_string(12, 5, 0.1 + 0.2, 7, soundfont=path)
    assert synth_gm.parse_source(named) == (12, 5, 0.1 + 0.2, 7.0, path)
    assert synth_gm.track_from_source(named) == dataclasses.replace(track, source=named, soundfont=path)


@pytest.mark.parametrize("source", ["synth:1:2:1.0:2.0", "synthgm:1:2:1.0", "synthgm:a:2:1.0:2.0",
                                    "synthgm:1:2:3.0:2.0", "synthgm:-1:2:1.0:2.0", "synthgm:1:2:1.0:2.0:", None])
def test_malformed_sources_are_refused(source):
    with pytest.raises(SynthSourceError, match="malformed synth-gm source"):
        synth_gm.parse_source(source)


def test_bad_corpus_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="num_tracks"):
        synth_gm.describe(-1)
    with pytest.raises(ConfigError, match="min_sec"):
        synth_gm.describe(3, min_sec=5.0, max_sec=1.0)


def test_tags_follow_their_definitions(corpus):
    for track in corpus:
        tags = set(track.tags)
        assert track.genre in synth_gm.SYNTH_GM_GENRES and track.parts[0] == "lead"
        assert list(track.parts) == [p for p in synth_gm.PARTS if p in track.parts]
        assert all(p in synth_gm.POOLS[pool].programs for p, pool in zip(track.programs, track.pools))
        assert {t for t in tags if synth_gm.TAG_LEVELS[t] == "instrument"} - {"drums"} == set(track.families)
        drums = track.drum_pattern != "none"
        assert ("drums" in tags) == drums == (track.drum_kit != "none") == (track.drum_program >= 0)
        assert ("swing" in tags) == track.swing and (drums or not track.swing)
        assert ("fast" in tags) == (track.tempo_bpm >= 120) and ("slow" in tags) == (track.tempo_bpm < 90)
        assert ("happy" in tags) == (track.mode == "major") != ("sad" in tags)
        assert ("soft" in tags) == (track.dynamics == "soft") and ("hard" in tags) == (track.dynamics == "hard")
        assert ("dance" in tags) == ("fast" in tags and track.drum_pattern == "four-on-the-floor"
                                     and "bass" in track.parts)
        assert ("calm" in tags) == ("slow" in tags and not drums and "soft" in tags)
        electric = set(track.programs) & synth_gm.ELECTRIC_PROGRAMS or (drums and track.drum_kit == "electronic")
        assert ("unplugged" in tags) == (not electric)
    assert synth_gm.TAG_LEVELS.keys() == set(synth_gm.SYNTH_GM_TAGS)


def test_every_label_occurs_and_programs_vary_within_each_family(corpus):
    tags = {t for track in corpus for t in track.tags}
    assert tags == set(synth_gm.SYNTH_GM_TAGS)
    assert {t.genre for t in corpus} == set(synth_gm.SYNTH_GM_GENRES)
    programs = {p for track in corpus for p in track.programs}
    for family in synth_gm.TAGGED_FAMILIES:
        in_family = {p for p in programs if synth_gm.FAMILIES[p // 8] == family}
        assert len(in_family) >= (1 if family == "ethnic" else 3), family  # banjo and fiddle only
    assert len(programs) >= 80
    assert all(p // 8 in (12, 14, 15) or p in programs for pool in synth_gm.POOLS.values() for p in pool.programs)


def test_genres_are_arrangements_that_overlap(corpus):
    """Genre-conditional arrangements: typical instruments are frequent, but no tag decides a genre."""
    def share(genre, tag):
        tracks = [t for t in corpus if t.genre == genre]
        return sum(tag in t.tags for t in tracks) / len(tracks)

    assert share("classical", "drums") == 0 and share("electronic", "drums") == 1
    assert share("rock", "guitar") > 0.8 and share("electronic", "synth-lead") > 0.6
    assert share("jazz", "swing") > 0.4 and share("folk", "unplugged") > 0.5 and share("ambient", "synth-pad") > 0.4
    assert share("jazz", "reed") + share("jazz", "brass") > 0.6
    for tag in synth_gm.SYNTH_GM_TAGS:
        for genre in synth_gm.SYNTH_GM_GENRES:
            has = [t.genre == genre for t in corpus if tag in t.tags]
            assert not (all(has) and share(genre, tag) == 1), (tag, genre)  # no tag is a genre's exact mark


def test_pools_fit_their_parts():
    for genre, parts in synth_gm.GENRE_PARTS.items():
        for part, pools in parts.items():
            assert pools and all(w > 0 for w in pools.values())
            for name in pools:
                # The bass part's pools play the bass line only; every other pool can accompany.
                assert bool(synth_gm.POOLS[name].roles) == (part != "bass"), (genre, part, name)


def test_performance_plays_exactly_the_tagged_instruments():
    for track in synth_gm.describe(30, seed=2, min_sec=2.0, max_sec=3.0):
        performance = synth_gm.perform(track, SR)
        families = {synth_gm.FAMILIES[p // 8] for p in performance.programs.values()}
        assert families == set(track.families)
        channels = {e[2] for e in performance.events}
        assert channels == {synth_gm.CHANNELS[p] for p in track.parts} | ({9} if "drums" in track.tags else set())
        samples = [e[0] for e in performance.events]
        assert samples == sorted(samples) and all(0 <= k <= 127 for _, _, _, k, _ in performance.events)
        assert all(0 < v <= 1 for _, on, _, _, v in performance.events if on)
        assert all(0 < v for v in performance.volumes.values())


# ---------------------------------------------------------------------------------------------
# SoundFonts


@pytest.mark.skipif(not HAVE_DEFAULT_SOUNDFONT, reason="pretty_midi is not installed")
def test_default_soundfont_is_pretty_midis_timgm6mb():
    default = soundfont.resolve(None)
    assert default.default and default.path.endswith("pretty_midi/TimGM6mb.sf2")
    with open(default.path, "rb") as fh:
        assert default.sha256 == hashlib.sha256(fh.read()).hexdigest()
    assert soundfont.resolve(default.path) == dataclasses.replace(default, default=False)


def test_missing_or_unusable_soundfonts_are_one_line_errors_naming_the_file(tmp_path):
    junk = tmp_path / "junk.sf2"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(64))
    empty = tmp_path / "empty.sf2"
    empty.write_bytes(b"")
    cases = {tmp_path / "missing.sf2": "cannot read the SoundFont", junk: "not a SoundFont", empty: "an empty file",
             tmp_path: "not a SoundFont file"}
    for path, reason in cases.items():
        with pytest.raises(SoundFontError) as err:
            soundfont.resolve(path)
        assert str(path) in str(err.value) and reason in str(err.value) and "\n" not in str(err.value)


def test_a_missing_renderer_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tinysoundfont", None)  # import tinysoundfont now fails
    with pytest.raises(SoundFontError) as err:
        soundfont.renderer()
    message = str(err.value)
    assert "-m pip install --no-deps 'tinysoundfont>=0.3.7'" in message and "\n" not in message
    assert isinstance(err.value, MsaggError)


# ---------------------------------------------------------------------------------------------
# Rendering


@needs_renderer
def test_rendering_is_deterministic_bounded_and_at_the_drawn_level():
    tracks = synth_gm.describe(8, seed=5, min_sec=1.0, max_sec=1.5)
    first = [synth_gm.render(t.source, SR) for t in tracks]
    again = [synth_gm.render(t.source, SR) for t in reversed(tracks)][::-1]  # other history in this process
    for track, audio, repeat in zip(tracks, first, again):
        assert np.array_equal(audio, repeat)
        assert audio.dtype == np.float32 and audio.shape == (round(track.duration_sec * SR),)
        assert np.isfinite(audio).all() and np.abs(audio).max() < 1
        rms_db = 20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        assert rms_db == pytest.approx(track.level_db, abs=1.0) and rms_db > -40  # never silent
    n = min(a.size for a in first)
    assert all(not np.allclose(first[0][:n], other[:n]) for other in first[1:])
    assert synth_gm.render(tracks[0].source, 16000).shape == (round(tracks[0].duration_sec * 16000),)


@needs_renderer
def test_other_programs_sound_different():
    track = next(t for t in synth_gm.describe(40, seed=1, min_sec=1.5, max_sec=1.5) if t.programs[0] != 73)
    default = soundfont.resolve(None)
    base = synth_gm.render_track(track, SR, default)
    flute = synth_gm.render_track(dataclasses.replace(track, programs=(73, *track.programs[1:])), SR, default)
    assert base.shape == flute.shape and not np.allclose(base, flute, atol=1e-3)
    spectra = [np.abs(np.fft.rfft(x.astype(np.float64))) for x in (base, flute)]
    assert np.corrcoef(*spectra)[0, 1] < 0.95


@needs_renderer
def test_a_soundfont_without_a_program_is_refused():
    track = synth_gm.describe(1, seed=0, min_sec=1.0, max_sec=1.0)[0]
    with pytest.raises(SoundFontError, match=r"no preset for GM program 200 \(bank 0\)"):
        synth_gm.render_track(dataclasses.replace(track, programs=(200, *track.programs[1:])), SR,
                              soundfont.resolve(None))


@needs_renderer
def test_render_rejects_bad_rates():
    with pytest.raises(ConfigError, match="sample_rate"):
        synth_gm.render(synth_gm.source_string(0, 0, 1.0, 1.0), 1000)


# ---------------------------------------------------------------------------------------------
# The datasets and prepare


@needs_renderer
def test_adapters_list_tags_genres_and_the_soundfont():
    options = AdapterOptions(num_tracks=30, seed=3, min_sec=1.0, max_sec=2.0)
    tags = adapters.make_tracklist("synth-gm-tags", None, options)
    described = synth_gm.describe(30, 3, 1.0, 2.0)
    assert tags.task == "tags" and tags.label_names == list(synth_gm.SYNTH_GM_TAGS)
    assert tags.track_ids[4] == "synthgm3-00004" and tags.sources[4] == described[4].source
    for row, track in enumerate(described):
        assert {tags.label_names[i] for i in np.flatnonzero(tags.labels[row])} == set(track.tags)
    corpus = tags.split_info["corpus"]
    assert corpus["soundfont_sha256"] == soundfont.resolve(None).sha256 and corpus["renderer"].startswith("tinysound")
    genre = adapters.make_tracklist("synth-gm-genre", None, options)
    assert genre.task == "classes" and genre.label_names == list(synth_gm.SYNTH_GM_GENRES)
    assert genre.sources[0] == synth_gm.source_string(3 + adapters.GENRE_SEED_OFFSET, 0, 1.0, 2.0)
    groups = adapters.label_groups("synth-gm-tags", tags.label_names)
    assert list(dict.fromkeys(groups.values())) == ["acoustic", "instrument", "high-level"]
    assert groups["guitar"] == "instrument" and groups["unplugged"] == "high-level" and groups["swing"] == "acoustic"


def test_soundfont_options_only_apply_to_synth_gm():
    problems = AdapterOptions(soundfont="x.sf2").problems(adapters.get_adapter("synth-tags"))
    assert problems == ["soundfont='x.sf2': only synth-gm-tags and synth-gm-genre render through a SoundFont; "
                        "synth-tags does not"]
    assert AdapterOptions(soundfont="x.sf2").problems(adapters.get_adapter("synth-gm-tags")) == []
    assert "64 lower-case hex digits" in AdapterOptions(soundfont_sha256="abc").problems(
        adapters.get_adapter("synth-gm-genre"))[0]
    assert adapters.pin_options("synth-tags", AdapterOptions()) == {}


@needs_renderer
def test_prepare_renders_synth_gm_and_pins_the_soundfont(tmp_path):
    config = prepare.Config(dataset="synth-gm-tags", num_tracks=6, min_sec=1.0, max_sec=1.5, sample_rate=SR)
    out = tmp_path / "run"
    path = prepare.run(config, out, workers=1, progress=False)
    sha = soundfont.resolve(None).sha256
    stored = json.loads((out / "config.json").read_text())
    assert stored["soundfont"] is None and stored["soundfont_sha256"] == sha
    described = synth_gm.describe(6, 0, 1.0, 1.5)
    with AudioCache(path) as cache:
        assert cache.num_tracks == 6 and cache.sample_rate == SR and cache.dataset == "synth-gm-tags"
        assert cache.split_info["corpus"]["soundfont_sha256"] == sha
        for row, track in enumerate(described):
            assert {cache.label_names[i] for i in np.flatnonzero(cache.labels[row])} == set(track.tags)
        np.testing.assert_allclose(cache.track(2), synth_gm.render(described[2].source, SR), atol=1 / 32768)
    done = (out / "DONE").read_text()
    assert prepare.run(config, out, workers=1, progress=False) == path  # the same SoundFont: nothing to do
    assert (out / "DONE").read_text() == done

    # Another SoundFont file, even one only a byte apart, is another config: never resumed into this one.
    other = tmp_path / "other.sf2"
    shutil.copyfile(soundfont.resolve(None).path, other)
    with open(other, "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    with pytest.raises(RunConflictError, match="another config"):
        prepare.run(dataclasses.replace(config, soundfont=str(other)), out, workers=1, progress=False)
    # A config that pins a sha256 refuses a file that has changed since.
    with pytest.raises(SoundFontError, match="the SoundFont changed"):
        prepare.run(dataclasses.replace(config, soundfont=str(other), soundfont_sha256=sha), tmp_path / "pinned",
                    workers=1, progress=False)
    assert not (tmp_path / "pinned").exists()


def test_prepare_refuses_a_missing_soundfont_before_making_the_run_folder(tmp_path):
    config = prepare.Config(dataset="synth-gm-genre", num_tracks=6, soundfont=str(tmp_path / "none.sf2"))
    with pytest.raises(SoundFontError) as err:
        prepare.run(config, tmp_path / "run", workers=1, progress=False)
    assert str(err.value).startswith(f"{tmp_path / 'none.sf2'}: cannot read the SoundFont")
    assert not (tmp_path / "run").exists()
