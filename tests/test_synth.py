"""Tests for data/synth.py: determinism, labels that follow their definitions, audio with known answers."""

import dataclasses
import hashlib

import numpy as np
import pytest
from scipy import signal, stats

from msagg.data.synth import music as synth
from msagg.data.errors import ConfigError, MsaggError

SR = 8000  # low rate keeps the rendering tests fast
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])  # Krumhansl
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@pytest.fixture(scope="module")
def corpus():
    return synth.describe(200, seed=0)


@pytest.fixture(scope="module")
def short_rendered():
    """120 short tracks at 8 kHz with their RMS and spectral centroid."""
    tracks = synth.describe(120, seed=11, min_sec=3.0, max_sec=5.0)
    rms, centroid = [], []
    for track in tracks:
        x = synth.render(track.source, SR).astype(np.float64)
        rms.append(np.sqrt(np.mean(x**2)))
        magnitude = np.abs(np.fft.rfft(x))
        centroid.append(np.sum(magnitude * np.fft.rfftfreq(x.size, 1 / SR)) / np.sum(magnitude))
    return tracks, np.array(rms), np.array(centroid)


def roc_auc(scores, positive):
    """Mann-Whitney ROC-AUC of ``scores`` for the boolean labels ``positive``."""
    ranks = stats.rankdata(scores)
    num_pos = positive.sum()
    return (ranks[positive].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * (len(positive) - num_pos))


# ---------------------------------------------------------------------------------------------
# Determinism and the describe / render contract


def test_same_source_renders_identical_audio_and_other_tracks_differ():
    source = synth.source_string(7, 3, 2.0, 3.0)
    first, second = synth.render(source, SR), synth.render(source, SR)
    assert np.array_equal(first, second)
    other_index = synth.render(synth.source_string(7, 4, 2.0, 3.0), SR)
    other_seed = synth.render(synth.source_string(8, 3, 2.0, 3.0), SR)
    for other in (other_index, other_seed):
        n = min(first.size, other.size)
        assert not np.allclose(first[:n], other[:n])


# sha256 of the concatenated float32 samples of describe(12, seed, 2.0, 4.0) rendered at 22050 Hz
# (seed 1000 is synth-genre's corpus for seed 0), recorded before data/synth.py was split into
# synth, synth_render and synth_instruments. They pin every draw and every operation of the
# renderer: a refactoring must keep them; a deliberate change of the sound must update them (and
# says so in its commit, since every cache made from synth sources changes with it). numpy's
# transcendental functions can differ in the last bit between CPU instruction sets, so on another
# machine a mismatch here alone (with the other synth tests passing) is no bug in the code.
GOLDEN_RENDER_SHA256 = {
    0: "f9e54f7dd8a1db36c0ae11206c1e6e1775abbc350cbe0f481d8992e40ff6783e",
    7: "92fa80632afc8131b9f9078288cb4246df8993d6121ffb1b90b92fa512abc391",
    1000: "ff583b231538d5178d9b58c5aa8b5f10826f30d82ab1f60ba3582e5ac8acfcf8",
}
GOLDEN_DESCRIBE_SHA256 = "019722045252708f2cd6cf9ae97b5a352f5a5457d6ce5475899e4698838a0bfe"  # repr(describe(50, 3))


@pytest.mark.parametrize("seed", sorted(GOLDEN_RENDER_SHA256))
def test_rendered_audio_is_bit_identical_to_the_recorded_golden_hashes(seed):
    digest = hashlib.sha256()
    for track in synth.describe(12, seed, 2.0, 4.0):
        digest.update(synth.render(track.source, 22050).tobytes())
    assert digest.hexdigest() == GOLDEN_RENDER_SHA256[seed]


def test_described_parameters_and_labels_are_identical_to_the_recorded_golden_hash():
    assert hashlib.sha256(repr(synth.describe(50, 3)).encode()).hexdigest() == GOLDEN_DESCRIBE_SHA256


def test_describe_is_deterministic_and_each_track_independent_of_the_corpus_size():
    assert synth.describe(10, seed=4) == synth.describe(10, seed=4)
    assert synth.describe(30, seed=4)[:10] == synth.describe(10, seed=4)
    assert synth.describe(10, seed=4) != synth.describe(10, seed=5)


def test_describe_matches_what_render_plays():
    tracks = synth.describe(25, seed=3, min_sec=2.0, max_sec=4.0)
    for track in tracks:
        assert track.source == synth.source_string(3, track.index, 2.0, 4.0)
        assert synth.track_from_source(track.source) == track
    for track in tracks[:4]:
        audio = synth.render(track.source, SR)
        assert audio.size == round(track.duration_sec * SR)
        # The level render sets is the level describe promised (the limiter only trims loud peaks).
        assert 20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) == pytest.approx(track.level_db, abs=1.0)


def test_source_string_round_trips_odd_durations():
    source = synth.source_string(12, 5, 0.1 + 0.2, 7)
    assert synth.parse_source(source) == (12, 5, 0.1 + 0.2, 7.0)
    assert synth.track_from_source(source) == synth.describe(6, seed=12, min_sec=0.1 + 0.2, max_sec=7)[5]


def test_durations_stay_within_bounds_and_spread(corpus):
    durations = np.array([track.duration_sec for track in corpus])
    assert durations.min() >= 10.0 and durations.max() <= 30.0
    assert durations.min() < 13.0 and durations.max() > 27.0
    fixed = synth.describe(5, seed=1, min_sec=2.5, max_sec=2.5)
    assert all(track.duration_sec == 2.5 for track in fixed)


@pytest.mark.parametrize("sample_rate", [4000, 8000, 16000, 22050, 44100])
def test_any_sample_rate_gives_the_right_length_and_a_bounded_float32_signal(sample_rate):
    track = synth.describe(3, seed=2, min_sec=1.5, max_sec=2.0)[2]
    audio = synth.render(track.source, sample_rate)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.size == round(track.duration_sec * sample_rate)
    assert np.all(np.isfinite(audio))
    assert np.abs(audio).max() < 1.0
    assert np.abs(audio).max() > 0.01


def test_loudest_tracks_are_limited_so_int16_storage_never_overflows():
    loudest = sorted(synth.describe(60, seed=9, min_sec=2.0, max_sec=3.0), key=lambda t: -t.level_db)[:5]
    for track in loudest:
        audio = synth.render(track.source, SR)
        assert np.abs(audio).max() <= 0.99
        as_int16 = np.round(audio.astype(np.float64) * 32768)
        assert as_int16.min() >= -32768 and as_int16.max() <= 32767


# ---------------------------------------------------------------------------------------------
# Vocabulary and labels


def test_vocabulary_has_three_levels_and_every_label_occurs(corpus):
    assert len(synth.SYNTH_TAGS) >= 12 and len(set(synth.SYNTH_TAGS)) == len(synth.SYNTH_TAGS)
    assert len(synth.SYNTH_GENRES) >= 5 and len(set(synth.SYNTH_GENRES)) == len(synth.SYNTH_GENRES)
    assert tuple(synth.TAG_DEFINITIONS) == synth.SYNTH_TAGS
    assert set(synth.TAG_LEVELS) == set(synth.SYNTH_TAGS)
    assert set(synth.TAG_LEVELS.values()) == {"acoustic", "instrument", "high-level"}
    tag_counts = {tag: sum(tag in track.tags for track in corpus) for tag in synth.SYNTH_TAGS}
    genre_counts = {genre: sum(track.genre == genre for track in corpus) for genre in synth.SYNTH_GENRES}
    assert min(tag_counts.values()) >= 5, tag_counts
    assert min(genre_counts.values()) >= 15, genre_counts
    assert all(track.genre in synth.SYNTH_GENRES for track in corpus)
    assert all(set(track.tags) <= set(synth.SYNTH_TAGS) for track in corpus)


def test_tags_follow_their_definitions(corpus):
    for track in corpus:
        tempo, pattern, tags = track.tempo_bpm, track.drum_pattern, set(track.tags)
        has = set(track.instruments)
        expected = {
            "loud": track.level_db >= synth.LOUD_DB,
            "quiet": track.level_db < synth.QUIET_DB,
            "bright": track.brightness >= synth.BRIGHT,
            "dark": track.brightness < synth.DARK,
            "low-register": track.register == "low",
            "high-register": track.register == "high",
            "fast": tempo >= synth.FAST_BPM,
            "slow": tempo < synth.SLOW_BPM,
            "piano": "piano" in has,
            "strings": "strings" in has,
            "plucked": "plucked" in has,
            "synth": "synth" in has,
            "bass": "bass" in has,
            "drums": pattern != "none",
            "dance": tempo >= 120 and pattern == "four-on-the-floor" and "bass" in has,
            "calm": tempo < 90 and pattern == "none" and track.dynamics == "soft",
            "energetic": tempo >= 110 and pattern != "none" and track.dynamics == "hard",
            "happy": track.mode == "major",
            "sad": track.mode == "minor",
        }
        assert {tag for tag, holds in expected.items() if holds} == tags, track
        assert has & set(synth.MELODIC), track  # every track has something to carry the melody
        assert track.cutoff_hz == pytest.approx(700 * 18**track.brightness, rel=1e-3)


def test_parameters_stay_in_range(corpus):
    for track in corpus:
        assert 50 <= track.tempo_bpm <= 160
        assert track.key in synth.KEY_NAMES and track.mode in synth.MODES
        assert track.drum_pattern in synth.DRUM_PATTERNS
        assert track.register in synth.REGISTERS and track.dynamics in synth.DYNAMICS
        assert 0.0 <= track.brightness <= 1.0
        assert synth.LEVEL_RANGE_DB[0] <= track.level_db <= synth.LEVEL_RANGE_DB[1]
        assert len(track.progression) == 4 and all(0 <= degree < 7 for degree in track.progression)


def test_genre_is_not_given_away_by_its_instruments_drums_and_tempo_class():
    tracks = synth.describe(600, seed=1)
    groups: dict[tuple, list[str]] = {}
    for track in tracks:
        tempo_class = "fast" if "fast" in track.tags else "slow" if "slow" in track.tags else "mid"
        groups.setdefault((track.instruments, track.drum_pattern, tempo_class), []).append(track.genre)
    # Best possible accuracy of a lookup table from that combination to the genre, on its own data.
    best = sum(max(genres.count(g) for g in set(genres)) for genres in groups.values()) / len(tracks)
    assert best < 0.9
    assert 0.5 < best  # but the genres do differ in those parameters


def test_high_level_tags_are_combinations_not_copies_of_one_genre(corpus):
    dance_genres = {track.genre for track in synth.describe(600, seed=1) if "dance" in track.tags}
    assert "electronic-dance" in dance_genres and len(dance_genres) >= 2
    edm = [track for track in corpus if track.genre == "electronic-dance"]
    assert any("dance" not in track.tags for track in edm)  # e.g. below 120 BPM


# ---------------------------------------------------------------------------------------------
# No tag is given away by one trivial statistic


# A tag defined by a statistic is predicted by it: "loud"/"quiet" are set by the RMS level and
# "bright"/"dark" by the low-pass cutoff that moves the spectral centroid. All others must not be.
RMS_TAGS = {"loud", "quiet"}
CENTROID_TAGS = {"bright", "dark"}


def test_no_tag_is_predicted_by_rms_or_spectral_centroid_alone(short_rendered):
    tracks, rms, centroid = short_rendered
    too_easy = []
    for tag in synth.SYNTH_TAGS:
        positive = np.array([tag in track.tags for track in tracks])
        assert 0 < positive.sum() < len(tracks), tag
        for name, statistic, exempt in (("rms", rms, RMS_TAGS), ("centroid", centroid, CENTROID_TAGS)):
            auc = roc_auc(statistic, positive)
            separation = max(auc, 1 - auc)  # predicting the absence of a tag is just as trivial
            if tag not in exempt and separation >= 0.85:
                too_easy.append((tag, name, round(separation, 3)))
    assert not too_easy


def test_level_and_brightness_tags_are_audible(short_rendered):
    tracks, rms, centroid = short_rendered

    def separation(statistic, positive_tag, negative_tag):
        keep = np.array([positive_tag in t.tags or negative_tag in t.tags for t in tracks])
        positive = np.array([positive_tag in t.tags for t in tracks])[keep]
        return roc_auc(statistic[keep], positive)

    assert separation(rms, "loud", "quiet") == 1.0
    assert separation(centroid, "bright", "dark") > 0.9
    bright = [c for t, c in zip(tracks, centroid) if "bright" in t.tags]
    dark = [c for t, c in zip(tracks, centroid) if "dark" in t.tags]
    assert np.mean(bright) > 1.3 * np.mean(dark)


# ---------------------------------------------------------------------------------------------
# Musical structure with known answers


def low_band_tempo_bpm(audio, sample_rate):
    """Tempo from the autocorrelation of the kick-band (< 150 Hz) onset strength, lags 0.3-0.8 s."""
    low = signal.sosfilt(signal.butter(4, 150, fs=sample_rate, output="sos"), audio.astype(np.float64))
    hop = sample_rate // 100
    energy = np.log1p(1000 * np.add.reduceat(low**2, np.arange(0, low.size, hop)))
    onset = np.maximum(np.diff(energy), 0)
    onset -= onset.mean()
    autocorrelation = np.correlate(onset, onset, "full")[onset.size - 1 :]
    lags = np.arange(autocorrelation.size) * hop / sample_rate
    window = (lags >= 0.3) & (lags <= 0.8)
    return 60 / lags[window][np.argmax(autocorrelation[window])]


def test_four_on_the_floor_kick_period_matches_the_tempo():
    tracks = synth.describe(200, seed=5, min_sec=8.0, max_sec=8.0)
    # Above 110 BPM the beat (0.44-0.55 s) is the only multiple of the kick period in the window.
    chosen = [t for t in tracks if t.drum_pattern == "four-on-the-floor" and t.tempo_bpm >= 110][:4]
    assert len(chosen) == 4
    for track in chosen:
        estimate = low_band_tempo_bpm(synth.render(track.source, SR), SR)
        assert estimate == pytest.approx(track.tempo_bpm, rel=0.05), track


def test_dance_tracks_pulse_on_the_beat_and_calm_tracks_much_less():
    tracks = synth.describe(300, seed=6, min_sec=6.0, max_sec=6.0)
    dance = [t for t in tracks if "dance" in t.tags][:6]
    calm = [t for t in tracks if "calm" in t.tags][:6]
    assert len(dance) == 6 and len(calm) == 6

    def beat_regularity(track):
        """Autocorrelation of the kick-band onset strength at the beat period, relative to lag 0."""
        audio = synth.render(track.source, SR).astype(np.float64)
        low = signal.sosfilt(signal.butter(4, 150, fs=SR, output="sos"), audio)
        hop = SR // 100
        energy = np.add.reduceat(low**2, np.arange(0, low.size, hop))
        onset = np.maximum(np.diff(np.log1p(energy / energy.mean())), 0)
        onset -= onset.mean()
        autocorrelation = np.correlate(onset, onset, "full")[onset.size - 1 :]
        beat = int(round(60 / track.tempo_bpm * 100))
        return autocorrelation[beat - 1 : beat + 2].max() / autocorrelation[0]

    for track in dance:
        assert track.tempo_bpm >= 120 and track.drum_pattern == "four-on-the-floor" and "bass" in track.instruments
    for track in calm:
        assert track.tempo_bpm < 90 and track.drum_pattern == "none" and track.dynamics == "soft"
    dance_regularity = np.mean([beat_regularity(t) for t in dance])
    calm_regularity = np.mean([beat_regularity(t) for t in calm])
    assert dance_regularity > 0.25
    assert dance_regularity > 2 * calm_regularity


def test_key_and_mode_are_audible_in_the_chroma():
    tracks = synth.describe(24, seed=5, min_sec=6.0, max_sec=6.0)
    correct = 0
    for track in tracks:
        audio = synth.render(track.source, SR).astype(np.float64)
        freqs, _, spectrogram = signal.stft(audio, SR, nperseg=2048, noverlap=1024)
        magnitude = np.abs(spectrogram).mean(axis=1)
        keep = (freqs > 80) & (freqs < 2000)
        pitch_class = np.round(12 * np.log2(freqs[keep] / 440) + 69).astype(int) % 12
        chroma = np.bincount(pitch_class, weights=magnitude[keep], minlength=12)
        rotate = (np.arange(12) - synth.KEY_NAMES.index(track.key)) % 12
        major = np.corrcoef(chroma, MAJOR_PROFILE[rotate])[0, 1]
        minor = np.corrcoef(chroma, MINOR_PROFILE[rotate])[0, 1]
        correct += ("major" if major > minor else "minor") == track.mode
    assert correct / len(tracks) >= 0.85


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "source",
    [
        "synth:1:2:10:30:extra",
        "synth:1:2:10",
        "synt:1:2:10.0:30.0",
        "synth:x:2:10.0:30.0",
        "synth:1:2.5:10.0:30.0",
        "synth:-1:2:10.0:30.0",
        "synth:1:2:30.0:10.0",
        "synth:1:2:0:10.0",
        "synth:1:2:nan:10.0",
        "synth:1:2:10.0:inf",
        "",
    ],
)
def test_malformed_sources_are_refused_with_the_expected_form(source):
    with pytest.raises(synth.SynthSourceError, match="malformed synth source") as error:
        synth.render(source, SR)
    assert repr(source) in str(error.value)


def test_bad_arguments_are_refused():
    # User errors (printed by the CLI as one line), still ValueErrors for library callers.
    assert issubclass(synth.SynthSourceError, MsaggError) and issubclass(ConfigError, ValueError)
    with pytest.raises(ConfigError, match="min_sec and max_sec must be numbers"):
        synth.describe(3, min_sec="soon")
    with pytest.raises(ConfigError, match="sample_rate"):
        synth.render(synth.source_string(0, 0, 1.0, 1.0), 100)
    with pytest.raises(ConfigError, match="num_tracks"):
        synth.describe(-1)
    with pytest.raises(ConfigError, match="seed"):
        synth.describe(3, seed=-2)
    with pytest.raises(ConfigError, match="min_sec"):
        synth.describe(3, min_sec=5.0, max_sec=2.0)
    with pytest.raises(ConfigError, match="index"):
        synth.source_string(0, -1)


def test_tracks_are_frozen():
    track = synth.describe(1)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        track.genre = "rock"
