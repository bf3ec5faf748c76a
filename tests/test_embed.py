"""``msagg embed``: a collection's song vectors in one file, bad files skipped, and a stopped run resumed."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import msagg
from msagg.data.formats.embeddings import read_embeddings
from msagg.pipeline.cli import main
from msagg.stages import embed
from tiny_family import SAMPLE_RATE

NAMES = [f"{scale}/{tap}" for scale in ("3^2", "4^2") for tap in ("-3", "-2", "-1")]


class Stop(Exception):
    """Raised from ``on_song``: the run stops as a crash would, between two songs."""


@pytest.fixture()
def songs(tmp_path):
    """Five clips of different lengths in a folder tree, and one file that is no audio."""
    root = tmp_path / "songs"
    rng = np.random.default_rng(7)
    files = [root / "a.wav", root / "b.flac", root / "disc 2" / "c.wav", root / "disc 2" / "d.ogg", root / "z.wav"]
    for i, path in enumerate(files):
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.3 * rng.standard_normal(300 + 250 * i)).astype(np.float32), SAMPLE_RATE)
    (root / "broken.wav").write_bytes(b"RIFF" + bytes(40))
    (root / "notes.txt").write_text("not audio")
    return root


def _same(a: dict, b: dict) -> None:
    assert a["paths"] == b["paths"] and a["skipped"] == b["skipped"] and a["attrs"] == b["attrs"]
    arrays = sorted(k for k in a if k not in ("paths", "skipped", "attrs"))
    assert arrays == sorted(k for k in b if k not in ("paths", "skipped", "attrs"))
    for key in arrays:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_embed_writes_a_row_per_song_named_as_features_h5_and_lists_bad_files(tiny_family, songs, tmp_path):
    out = tmp_path / "songs.h5"
    result = CliRunner().invoke(main, ["embed", str(songs), "--pretrain", str(tiny_family), "--frames",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"embeddings: {out} (5 songs)" in result.stdout
    broken = str(songs / "broken.wav")
    assert "skipped 1 file that could not be read:" in result.stderr
    assert f"  {broken}: cannot decode: corrupt or unsupported audio" in result.stderr
    data = read_embeddings(out)
    assert data["paths"] == [str(songs / p) for p in ("a.wav", "b.flac", "disc 2/c.wav", "disc 2/d.ogg", "z.wav")]
    assert [p for p, _ in data["skipped"]] == [broken] and not (tmp_path / "songs.h5.parts").exists()
    assert sorted(k[len("features/"):] for k in data if k.startswith("features/")) == sorted(NAMES)
    family = msagg.load(tiny_family)
    for row, path in enumerate(data["paths"]):
        song = family.embed_file(path, frames=True)
        for name in NAMES:
            np.testing.assert_allclose(data[f"features/{name}"][row], song.vectors[name], rtol=1e-5, atol=1e-6)
        scale = "3^2"
        counts = data[f"num_segments/{scale}"]
        assert counts[row] == song.num_segments[scale]
        lo = int(counts[:row].sum())
        np.testing.assert_array_equal(data[f"frame_times/{scale}"][lo:lo + counts[row]], song.times[scale])
        np.testing.assert_allclose(data[f"frames/{scale}/-1"][lo:lo + counts[row]], song.frames[f"{scale}/-1"],
                                   rtol=1e-5, atol=1e-6)
    again = CliRunner().invoke(main, ["embed", str(songs), "--pretrain", str(tiny_family), "--out", str(out)])
    assert again.exit_code == 1 and f"Error: {out}: exists; give --overwrite to replace it" in again.stderr


def test_a_stopped_run_resumes_and_writes_what_an_uninterrupted_run_writes(tiny_family, songs, tmp_path):
    whole = embed.run([songs], tmp_path / "whole.h5", pretrain=tiny_family, frames=True, progress=False)
    out = tmp_path / "resumed.h5"
    done = []

    def stop_after_three(path):
        done.append(path)
        if len(done) == 3:
            raise Stop(path)

    with pytest.raises(Stop):
        embed.run([songs], out, pretrain=tiny_family, frames=True, progress=False, on_song=stop_after_three)
    assert not out.exists() and len(list(embed.parts_folder(out).glob("*.npz"))) == 3
    resumed = embed.run([songs], out, pretrain=tiny_family, frames=True, progress=False, on_song=done.append)
    assert resumed.num_resumed == 3 and len(done) == 6  # the other three files only
    assert (resumed.num_songs, len(resumed.skipped)) == (whole.num_songs, len(whole.skipped)) == (5, 1)
    _same(read_embeddings(out), read_embeddings(whole.out))
    assert not embed.parts_folder(out).exists()


def test_a_run_with_other_settings_starts_its_parts_again(tiny_family, songs, tmp_path):
    out = tmp_path / "e.npz"

    def stop_at_once(path):
        raise Stop(path)

    with pytest.raises(Stop):
        embed.run([songs], out, pretrain=tiny_family, progress=False, on_song=stop_at_once)
    summary = embed.run([songs], out, pretrain=tiny_family, song_pool="max", progress=False)
    assert summary.num_resumed == 0
    data = read_embeddings(out)
    assert data["attrs"]["song_pool"] == "max" and "frames/3^2/-1" not in data
    # the .npz holds what the HDF5 form holds, under the same names
    _same(data, read_embeddings(embed.run([songs], tmp_path / "e.h5", pretrain=tiny_family, song_pool="max",
                                          progress=False).out))


def test_embed_refuses_a_folder_without_audio(tiny_family, tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["embed", str(tmp_path / "empty"), "--pretrain", str(tiny_family),
                                       "--out", str(tmp_path / "x.h5")])
    assert result.exit_code == 1 and f"Error: {tmp_path / 'empty'}: holds no audio files (.wav" in result.stderr
