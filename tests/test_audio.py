"""msagg.data.audio: every format decodes to mono float32 at the asked rate; bad files name themselves."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from msagg.data import audio

LOSSLESS = ["wav", "flac", "au"]
LOSSY = ["ogg"] + (["mp3"] if "MP3" in sf.available_formats() else [])


def sine(freq, sec, sample_rate, amplitude=0.5, phase=0.0):
    t = np.arange(int(round(sec * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def peak_hz(wave, sample_rate):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.argmax(spectrum) * sample_rate / len(wave)


def amplitude(wave):
    middle = wave[len(wave) // 4 : -len(wave) // 4]  # away from codec and resampler edges
    return float(np.sqrt(2 * np.mean(middle.astype(np.float64) ** 2)))


@pytest.mark.parametrize("ext", LOSSLESS + LOSSY)
def test_load_resamples_and_mixes_stereo_to_mono(tmp_path, ext):
    # Left 0.6 and right 0.2 of the same 1 kHz sine: the mean of the channels is a 0.4 sine.
    left, right = sine(1000, 1.0, 44100, 0.6), sine(1000, 1.0, 44100, 0.2)
    path = audio.write(tmp_path / f"tone.{ext}", np.stack([left, right], axis=1), 44100)
    wave = audio.load(path, 22050)
    assert wave.dtype == np.float32 and wave.ndim == 1
    if ext in LOSSLESS:
        assert len(wave) == 22050
        assert amplitude(wave) == pytest.approx(0.4, abs=0.005)
    else:  # encoder delay and padding change the length a little, the codec the level a little
        assert abs(len(wave) - 22050) < 0.1 * 22050
        assert amplitude(wave) == pytest.approx(0.4, rel=0.1)
    assert peak_hz(wave, 22050) == pytest.approx(1000, abs=2)


def test_mixdown_is_the_mean_of_the_channels(tmp_path):
    tone = sine(440, 0.5, 22050, 0.5)
    path = audio.write(tmp_path / "cancel.wav", np.stack([tone, -tone], axis=1), 22050)
    np.testing.assert_allclose(audio.load(path, 22050), 0.0, atol=1e-4)


def test_upsampling_keeps_frequency(tmp_path):
    path = audio.write(tmp_path / "low.flac", sine(300, 1.0, 8000, 0.5), 8000)
    wave = audio.load(path, 22050)
    assert len(wave) == 22050
    assert peak_hz(wave, 22050) == pytest.approx(300, abs=2)
    assert amplitude(wave) == pytest.approx(0.5, abs=0.005)


def test_same_rate_is_not_resampled(tmp_path):
    tone = sine(440, 0.25, 16000, 0.5)
    sf.write(tmp_path / "f.wav", tone, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(audio.load(tmp_path / "f.wav", 16000), tone)


def test_corrupt_file_names_file_and_reason(tmp_path):
    path = tmp_path / "corrupt song.wav"
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    with pytest.raises(audio.AudioError, match=r"corrupt song\.wav: cannot decode: corrupt or unsupported") as info:
        audio.load(path, 22050)
    assert info.value.path == str(path) and "cannot decode" in info.value.reason


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without mp3")
def test_corrupt_mp3(tmp_path):
    path = tmp_path / "broken.mp3"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(audio.AudioError, match=r"broken\.mp3: cannot decode"):
        audio.load(path, 22050)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(audio.AudioError, match=r"empty\.wav: empty file \(0 bytes\)"):
        audio.load(path, 22050)


def test_header_without_samples(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 22050)
    with pytest.raises(audio.AudioError, match=r"silent\.wav: no audio samples"):
        audio.load(path, 22050)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(audio.AudioError, match=r"nothere\.flac: no such file"):
        audio.load(tmp_path / "nothere.flac", 22050)
    with pytest.raises(audio.AudioError, match="not a file"):
        audio.load(tmp_path, 22050)


def test_non_finite_samples(tmp_path):
    wave = sine(440, 0.1, 22050)
    wave[100] = np.nan
    sf.write(tmp_path / "nan.wav", wave, 22050, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match=r"nan\.wav: holds non-finite samples"):
        audio.load(tmp_path / "nan.wav", 22050)


def test_audio_error_is_a_value_error_and_pickles():
    err = pickle.loads(pickle.dumps(audio.AudioError("a/b.wav", "empty file (0 bytes)")))
    assert isinstance(err, ValueError)
    assert (err.path, err.reason, str(err)) == ("a/b.wav", "empty file (0 bytes)", "a/b.wav: empty file (0 bytes)")


@pytest.mark.parametrize("rate", [0, -22050, 22050.0, True])
def test_bad_sample_rate(tmp_path, rate):
    path = audio.write(tmp_path / "x.wav", sine(440, 0.1, 22050), 22050)
    with pytest.raises(ValueError, match="sample_rate"):
        audio.load(path, rate)


@pytest.mark.parametrize("name", [b"caf\xe9.wav", b"new\nline.flac", b"-dash.ogg", b"with space \\ and \xff.au"])
def test_any_file_name_is_written_and_read(tmp_path, name):
    # Names are bytes: not UTF-8 (Latin-1 e-acute), a newline, a leading dash, a backslash.
    path = os.fsdecode(os.path.join(os.fsencode(tmp_path), name))
    tone = sine(440, 0.25, 16000, 0.5)
    assert audio.write(path, tone, 16000) == Path(path)
    assert os.path.isfile(os.path.join(os.fsencode(tmp_path), name))
    assert audio.load(path, 16000).shape[0] == pytest.approx(4000, abs=1200)  # ogg pads a little
    assert audio.load(os.fsencode(path), 16000).shape == audio.load(path, 16000).shape


def test_error_message_of_a_name_that_is_not_utf8_is_text(tmp_path):
    path = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9\n.wav"))
    Path(path).write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk")
    with pytest.raises(audio.AudioError) as info:
        audio.load(path, 22050)
    assert info.value.path == path  # as given, to open the file again
    assert str(info.value).startswith(str(tmp_path) + "/caf\\xe9\\n.wav: cannot decode")
    str(info.value).encode("utf-8")


def cut(path: Path, num_bytes: int) -> Path:
    path.write_bytes(path.read_bytes()[:num_bytes])
    return path


@pytest.mark.parametrize("ext, subtype, channels", [
    ("wav", "PCM_16", 1), ("wav", "PCM_24", 2), ("wav", "FLOAT", 1), ("au", "PCM_16", 2), ("aiff", "PCM_16", 1)])
def test_truncated_uncompressed_file_is_refused(tmp_path, ext, subtype, channels):
    path = tmp_path / f"cut.{ext}"
    sf.write(path, np.zeros((8000, channels), dtype=np.float32), 8000, subtype=subtype)
    size = path.stat().st_size
    whole = audio.load(path, 8000)
    assert whole.shape == (8000,)
    with pytest.raises(audio.AudioError, match=r"cut\.\w+: truncated: \d+ of 8000 frames") as info:
        audio.load(cut(path, size - size // 3), 8000)
    held = int(info.value.reason.split()[1])
    assert 0 < held < 8000 and held == sf.info(path).frames  # libsndfile reads what is there


def test_header_announcing_a_few_bytes_more_is_not_truncation(tmp_path):
    # Some writers give the data chunk a size a header's length too large: nothing is missing.
    path = tmp_path / "long header.wav"
    sf.write(path, np.full(88200, 0.25, dtype=np.float32), 44100, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    data[at : at + 4] = (int.from_bytes(data[at : at + 4], "little") + 36).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert audio.load(path, 44100).shape == (88200,)
    path.write_bytes(bytes(data[:-2000]))  # 1000 frames short of the 88218 announced: cut
    with pytest.raises(audio.AudioError, match=r"truncated: 87200 of 88218 frames"):
        audio.load(path, 44100)


def test_cut_flac_cannot_be_decoded(tmp_path):
    # A compressed file announces no exact length; a cut FLAC fails to decode at the cut.
    path = audio.write(tmp_path / "cut.flac", sine(440, 1.0, 8000), 8000)
    with pytest.raises(audio.AudioError, match=r"cut\.flac: cannot decode"):
        audio.load(cut(path, path.stat().st_size // 2), 8000)
