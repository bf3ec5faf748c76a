"""Planted faults: a full disk, damaged chunks, unfinished upstream runs, temps left by killed runs.

The disk faults use a real tmpfs mounted for the test (root only; skipped where mounting is not
permitted). Each test's docstring names the fault it plants and what must happen.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import pretrain_runs
from msagg.data.formats import features as F
from msagg.data.formats import features_writer as FW
from msagg.data.atomic import WriteError, write_json, write_text
from msagg.data.formats.cache import AudioCache, CacheError
from msagg.data.formats.cache_writer import write_cache
from msagg.stages.runs.upstream import UnfinishedRunError
from msagg.data.tracklist import TrackList
from msagg.stages import extract
from msagg.stages.runs.folder import RunFolder
from msagg.stages.engines import taps

SAMPLE_RATE = 800
SCALES = ("3^2", "4^2")


# --- helpers -----------------------------------------------------------------------------------


class Disk:
    """A tmpfs mounted at ``path``; ``resize`` remounts it with another size, keeping its files."""

    def __init__(self, path: Path):
        self.path = path

    def _mount(self, kib: int, *extra: str) -> None:
        opts = ",".join([*extra, f"size={kib}k"])
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(self.path)], capture_output=True,
                             text=True)
        if res.returncode:
            raise OSError(res.stderr.strip() or f"mount exited with {res.returncode}")

    def resize(self, kib: int) -> None:
        self._mount(kib, "remount")

    def fill(self) -> Path:
        """Writes a ballast file until the disk is full; returns it (delete it to free the space)."""
        ballast = self.path / "ballast"
        with open(ballast, "wb", buffering=0) as fh:
            block = b"\0" * 4096
            try:
                while True:
                    fh.write(block)
            except OSError as err:
                assert err.errno == errno.ENOSPC
        return ballast


@pytest.fixture
def disk(tmp_path):
    """A 2 MiB tmpfs, unmounted after the test."""
    point = tmp_path / "disk"
    point.mkdir()
    d = Disk(point)
    try:
        d._mount(2048)
    except OSError as err:
        pytest.skip(f"mounting a tmpfs is not permitted here ({err})")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def tracklist(lengths, dataset="toy"):
    n = len(lengths)
    rng = np.random.default_rng(1)
    return TrackList(name=dataset, task="tags", label_names=["low", "mid", "high"],
                     track_ids=[f"t{i:03d}" for i in range(n)], sources=[f"synth:0:{i}:{n}" for i in range(n)],
                     labels=(rng.random((n, 3)) < 0.5).astype(np.uint8),
                     split=(["train", "valid", "test"] * n)[:n])


def waves(lengths):
    rng = np.random.default_rng(0)
    return [(0.5 * np.sin(0.05 * (i + 1) * np.arange(n)) + 0.1 * rng.standard_normal(n)).astype(np.float32)
            for i, n in enumerate(lengths)]


def make_prepare_run(folder: Path, lengths, *, done=True, tracks_per_shard=64) -> Path:
    """A prepare run folder (cache/, config.json, DONE with the cache's config hash)."""
    folder.mkdir(parents=True)
    write_cache(folder / "cache", tracklist(lengths), waves(lengths), sample_rate=SAMPLE_RATE,
                config_hash="cafe00000000", tracks_per_shard=tracks_per_shard)
    (folder / "config.json").write_text(json.dumps({"dataset": "toy"}))
    if done:
        (folder / "DONE").write_text(json.dumps({"config_hash": "cafe00000000"}))
    return folder


LENGTHS = [60 + (37 * i) % 140 for i in range(200)]  # 200 short tracks: several 64-row chunks


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A finished prepare run (200 short tracks), a finished pretrain run, and an uninterrupted extract."""
    root = tmp_path_factory.mktemp("faults")
    cache = make_prepare_run(root / "prepare", LENGTHS)
    pretrain = pretrain_runs.make_pretrain(root / "pretrain", cache, sample_rate=SAMPLE_RATE, scales=SCALES)
    config = extract.Config(pretrain=str(pretrain), cache=str(cache))
    reference = extract.run(config, root / "extract-ref", batch_size=16, progress=False)
    return config, reference


def same_features(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as x, h5py.File(b, "r") as y:
        for scale in SCALES:
            for tap in ("-3", "-2", "-1"):
                assert x["features"][scale][tap][...].tobytes() == y["features"][scale][tap][...].tobytes()
            assert x["num_segments"][scale][...].tobytes() == y["num_segments"][scale][...].tobytes()


def count_tracks(monkeypatch, after=None, hook=None):
    """Counts the tracks extract computes; ``hook()`` runs once after ``after`` calls."""
    seen = []
    real = taps.features_of_waves
    calls = []

    def counted(waves_, *args, **kwargs):
        seen.append(len(waves_))
        calls.append(1)
        if hook is not None and len(calls) == after + 1:
            hook()
        return real(waves_, *args, **kwargs)

    monkeypatch.setattr(taps, "features_of_waves", counted)
    return seen


# --- a full disk -------------------------------------------------------------------------------


def test_full_disk_mid_extract_is_one_line_then_a_rerun_resumes(upstream, disk, monkeypatch, capfd):
    """Fault: the disk fills up (another file takes the last byte) while extract writes rows.

    msagg extract stops with one line naming the partial file and the reason (no traceback, no
    'Exception ignored', no crash), writes no DONE, leaves the partial file unfinished with
    num_done counting only rows that are on disk and right; once space is freed, the same
    command resumes from there and ends with the same features as an uninterrupted run.
    """
    from msagg.pipeline.cli import main

    config, reference = upstream
    out = disk.path / "extract"
    partial = out / "features.h5.partial"
    ballast = []
    seen = count_tracks(monkeypatch, after=3, hook=lambda: ballast.append(disk.fill()))
    args = ["extract", "--pretrain", config.pretrain, "--cache", config.cache, "--batch-size", "16", "--out",
            str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == f"Error: no space left on device while writing {partial}"
    assert "Traceback" not in result.output and "Exception ignored" not in result.output
    assert "Exception ignored" not in capfd.readouterr().err
    assert ballast and len(seen) > 4  # the disk was full before the failing block
    assert not (out / "DONE").exists() and not (out / "features.h5").exists()
    with h5py.File(partial, "r") as h5:
        assert not bool(h5.attrs["complete"])
        done = int(h5.attrs["num_done"])
        assert 0 < done < len(LENGTHS)
        with h5py.File(reference, "r") as ref:
            for scale in SCALES:
                for tap in ("-3", "-2", "-1"):
                    np.testing.assert_array_equal(h5["features"][scale][tap][:done], ref["features"][scale][tap][:done])

    ballast[0].unlink()  # free the space
    seen.clear()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert sum(seen) == len(LENGTHS) - done  # resumed, not restarted
    assert (out / "DONE").is_file() and not partial.exists()
    same_features(out / "features.h5", reference)


def test_full_disk_when_writing_done_keeps_the_features_and_a_rerun_only_finishes(upstream, disk, monkeypatch):
    """Fault: the disk fills up after the features file is finished, so DONE cannot be written.

    The error names DONE; there is no DONE (so classify refuses the folder); with space again a
    rerun computes nothing and writes DONE.
    """
    from msagg.stages import classify

    config, reference = upstream
    out = disk.path / "extract"
    real_finalize = FW.FeaturesWriter.finalize
    ballast = []

    def finalize_then_fill(self):
        path = real_finalize(self)
        ballast.append(disk.fill())
        return path

    monkeypatch.setattr(FW.FeaturesWriter, "finalize", finalize_then_fill)
    with pytest.raises(WriteError) as caught:
        extract.run(config, out, batch_size=16, progress=False)
    assert str(caught.value) == f"no space left on device while writing {out / 'DONE'}"
    assert caught.value.errno == errno.ENOSPC
    assert not (out / "DONE").exists() and not list(out.glob(".DONE.tmp-*"))
    with pytest.raises(UnfinishedRunError, match=rf"{out}: this extract run has not finished \(no DONE marker\)"):
        classify.run(classify.Config(features=str(out)), disk.path / "classify", progress=False)

    ballast[0].unlink()
    monkeypatch.setattr(FW.FeaturesWriter, "finalize", real_finalize)
    seen = count_tracks(monkeypatch)
    extract.run(config, out, batch_size=16, progress=False)
    assert seen == [] and (out / "DONE").is_file()
    same_features(out / "features.h5", reference)


def test_full_disk_while_writing_the_cache_leaves_nothing_then_works_on_a_bigger_disk(disk):
    """Fault: a disk too small for the audio cache (a real 192 KiB tmpfs).

    write_cache stops at the first refused write with one line naming the shard it was writing,
    leaves neither shards nor temporary files; remounted bigger, the same call writes a cache that
    reads back the audio.
    """
    disk.resize(192)
    lengths = [30000, 20000, 40000]  # 180 KB of int16, in three shards
    target = disk.path / "prepare" / "cache"
    with pytest.raises(WriteError) as caught:
        write_cache(target, tracklist(lengths), waves(lengths), sample_rate=SAMPLE_RATE, tracks_per_shard=1)
    assert str(caught.value) == f"no space left on device while writing {target / 'shard-00001.h5'}"
    assert list(target.parent.iterdir()) == []

    disk.resize(1024)
    write_cache(target, tracklist(lengths), waves(lengths), sample_rate=SAMPLE_RATE, tracks_per_shard=1)
    with AudioCache(target) as cache:
        assert cache.checksummed
        for i, wave in enumerate(waves(lengths)):
            np.testing.assert_allclose(cache.track(i), wave, atol=1.5 / 32768)


@pytest.mark.parametrize("kind", ["json", "text", "png"])
def test_full_disk_on_an_atomic_write_keeps_the_old_file(disk, kind):
    """Fault: a full disk while JSON, CSV/Markdown text or a PNG plot is written atomically.

    The error names the final file; the previous version stays whole; no temporary file is left.
    """
    from msagg.stages.songs import plots

    name = {"json": "metrics.json", "text": "results.csv", "png": "per_label.png"}[kind]
    target = disk.path / name
    target.write_bytes(b"old")
    big = "x" * 65536

    def write():
        if kind == "json":
            write_json(target, {"big": big})
        elif kind == "text":
            write_text(target, big)
        else:
            plots.per_label_bars(target, [f"label{i}" for i in range(40)], {"a": list(np.linspace(0, 1, 40))},
                                 "ROC-AUC", "full disk")

    disk.fill()
    with pytest.raises(WriteError, match=rf"^no space left on device while writing {target}$"):
        write()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in disk.path.iterdir()) == ["ballast", name]


# --- damaged chunks ----------------------------------------------------------------------------


def garble(path: Path, dataset: str, chunk: int, num_bytes: int) -> None:
    """Overwrites ``num_bytes`` in the middle of one stored chunk of ``dataset`` with noise."""
    with h5py.File(path, "r") as h5:
        info = h5[dataset].id.get_chunk_info(chunk)
    num_bytes = min(num_bytes, info.size - 8)
    at = info.byte_offset + (info.size - num_bytes) // 2
    with open(path, "r+b") as fh:
        fh.seek(at)
        fh.write(np.random.default_rng(7).integers(0, 256, num_bytes, dtype=np.uint8).tobytes())


def test_damaged_audio_chunk_names_the_tracks_and_stops_pretrain_and_extract(tmp_path, upstream):
    """Fault: 64 KiB of garbage in the middle of a shard's audio (chunk 1 of /audio of shard 1).

    Reading a track or a crop in that chunk raises CacheError naming the cache, the shard and
    every track with samples in it; the other tracks read as before. Pretrain's crop reader and
    extract fail with that message instead of using the garbage; extract writes no DONE.
    """
    from msagg.stages.training.crops import CropSequence

    # Shard 1 holds tracks 4-7; its chunk 1 = samples [65536, 131072): tracks 5, 6, 7.
    lengths = [40000] * 8
    cache_dir = make_prepare_run(tmp_path / "prepare", lengths, tracks_per_shard=4)
    shard = cache_dir / "cache" / "shard-00001.h5"
    garble(shard, "audio", 1, 65536)
    message = (rf"{cache_dir / 'cache' / 'index.h5'}: damaged audio cache shard {shard}: samples \[65536, 131072\) "
               r"fail their Fletcher-32 checksum; tracks affected: t005, t006, t007; prepare the dataset again")
    with AudioCache(cache_dir) as cache:
        for i in (0, 3, 4):
            np.testing.assert_allclose(cache.track(i), waves(lengths)[i], atol=1.5 / 32768)
        for i in (5, 6, 7):
            with pytest.raises(CacheError, match=message):
                cache.track(i)
        with pytest.raises(CacheError, match=message):
            cache.crop(6, 100, 27)
        with pytest.raises(CacheError, match=message):
            CropSequence(cache, [6], 27, batch_size=2, steps=1)[0]

    config = extract.Config(pretrain=upstream[0].pretrain, cache=str(cache_dir))
    with pytest.raises(CacheError, match=message):
        extract.run(config, tmp_path / "extract", batch_size=64, progress=False)
    assert not (tmp_path / "extract" / "DONE").exists()


def test_a_deleted_shard_is_one_line_naming_it_and_its_tracks(tmp_path, upstream):
    """Fault: one shard file of a finished cache deleted.

    Opening the cache raises CacheError naming the cache, the shard and the tracks it held;
    msagg extract stops with that one line and writes no DONE.
    """
    from msagg.pipeline.cli import main

    cache_dir = make_prepare_run(tmp_path / "prepare", [300] * 6, tracks_per_shard=2)
    shard = cache_dir / "cache" / "shard-00001.h5"
    shard.unlink()
    expected = (f"{cache_dir / 'cache' / 'index.h5'}: audio shard {shard} is missing (tracks t002, t003); "
                "prepare the dataset again")
    with pytest.raises(CacheError) as err:
        AudioCache(cache_dir)
    assert str(err.value) == expected
    result = CliRunner().invoke(main, ["extract", "--pretrain", upstream[0].pretrain, "--cache", str(cache_dir),
                                       "--out", str(tmp_path / "extract")])
    assert result.exit_code == 1 and result.output.splitlines()[-1] == f"Error: {expected}"
    assert not (tmp_path / "extract" / "DONE").exists()


def test_full_disk_mid_prepare_is_one_line_naming_the_shard_then_a_rerun_resumes(disk):
    """Fault: the disk fills up while prepare's two workers write shards (a real 512 KiB tmpfs).

    msagg prepare stops with one line naming the shard being written (the error crosses the
    process pool), leaves no temporary file and no index; on a bigger disk the same command keeps
    the finished shards, decodes the others, and the cache reads back every track.
    """
    from msagg.pipeline.cli import main

    disk.resize(512)
    out = disk.path / "prepare"
    args = ["prepare", "--num-tracks", "8", "--min-sec", "1", "--max-sec", "1.5", "--sample-rate", "4000",
            "--workers", "2", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    last = result.output.splitlines()[-1]
    assert re.fullmatch(rf"Error: no space left on device while writing {out / 'cache'}/shard-0000\d\.h5", last), last
    assert "Traceback" not in result.output
    kept = sorted(p.name for p in (out / "cache").iterdir())
    assert "index.h5" not in kept and not [k for k in kept if ".tmp-" in k] and "plan.json" in kept
    assert 1 < len(kept) < 9  # some shards finished, not all

    disk.resize(4096)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    done = json.loads((out / "DONE").read_text())
    assert done["num_tracks"] == 8 and done["num_decoded_this_run"] == 8 - (len(kept) - 1)  # plan.json is kept too
    with AudioCache(out) as cache:
        assert [cache.track(i).shape[0] for i in range(8)] == cache.lengths.tolist()


def test_damaged_features_chunk_names_the_rows(tmp_path):
    """Fault: garbage in one chunk (rows 64..127) of /features/3^2/-1 of a finished features file.

    Reading that tap raises FeaturesError naming the file, the dataset, the rows and their tracks;
    the other taps read as before.
    """
    n = 130
    info = {s: FW.ScaleInfo(input_length=27, sample_rate=SAMPLE_RATE, model_hash=s, num_params=1,
                           dims={"-3": 4, "-2": 4, "-1": 40}) for s in SCALES}
    rng = np.random.default_rng(0)
    feats = {s: {t: rng.standard_normal((n, d)).astype(np.float32) for t, d in info[s].dims.items()} for s in SCALES}
    path = tmp_path / "features.h5"
    with FW.FeaturesWriter(path, track_ids=[f"t{i:03d}" for i in range(n)], labels=np.zeros((n, 2), np.uint8),
                          label_names=["a", "b"], split=["train"] * n, task="tags", dataset="toy",
                          pretrain_dataset="toy", song_pool="mean", config_hash="h", scales=info) as w:
        w.write(feats, {s: np.ones(n, np.int32) for s in SCALES})
        w.finalize()
    garble(path, "features/3^2/-1", 1, 4096)
    with F.FeaturesFile(path) as ff:
        assert ff.checksummed
        with pytest.raises(F.FeaturesError, match=(r"features\.h5: damaged features file: /features/3\^2/-1 rows "
                                                   r"\[64, 128\) fail their Fletcher-32 checksum \(tracks t064, "
                                                   r"t065, .* and 56 more\); extract the features again")):
            ff.get("3^2", "-1")
        np.testing.assert_array_equal(ff.get("4^2", "-1"), feats["4^2"]["-1"])
        np.testing.assert_array_equal(ff.get("3^2", "-2"), feats["3^2"]["-2"])


# --- unfinished upstream runs ------------------------------------------------------------------


def test_extract_refuses_a_cache_or_pretrain_run_without_done(tmp_path, upstream):
    """Fault: the upstream prepare run (or pretrain run) has no DONE marker, though its file is there.

    extract names the folder, whether given the folder, its cache/ or the index.h5 inside, and writes
    nothing; a DONE that records another run than the cache's is refused too.
    """
    config, _ = upstream
    cache_dir = make_prepare_run(tmp_path / "prepare", [100, 200, 300], done=False)
    for cache in (cache_dir, cache_dir / "cache", cache_dir / "cache" / "index.h5"):
        with pytest.raises(UnfinishedRunError,
                           match=rf"^{cache_dir}: this prepare run has not finished \(no DONE marker\)"):
            extract.run(extract.Config(pretrain=config.pretrain, cache=str(cache)), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()

    (cache_dir / "DONE").write_text(json.dumps({"config_hash": "another00000"}))
    with pytest.raises(UnfinishedRunError, match=r"config hash cafe00000000, but the folder's DONE marks a run with "
                                                 r"config hash another00000"):
        extract.run(extract.Config(pretrain=config.pretrain, cache=str(cache_dir)), tmp_path / "x", progress=False)

    pretrain = tmp_path / "pretrain"
    shutil.copytree(config.pretrain, pretrain)
    (pretrain / "DONE").unlink()
    with pytest.raises(ValueError, match=rf"{pretrain}: this pretrain run has not finished"):
        extract.run(extract.Config(pretrain=str(pretrain), cache=config.cache), tmp_path / "y", progress=False)


def test_classify_refuses_a_features_folder_without_done(tmp_path, upstream):
    """Fault: an extract run folder whose features.h5 is complete (its flag says so) but DONE is missing.

    classify names the folder, given the folder or the features.h5 inside it; with DONE back, a
    path to the file works.
    """
    from msagg.stages import classify

    _, reference = upstream
    folder = tmp_path / "extract"
    shutil.copytree(reference.parent, folder)
    (folder / "DONE").unlink()
    with h5py.File(folder / "features.h5", "r") as h5:
        assert bool(h5.attrs["complete"])
    for features in (folder, folder / "features.h5"):
        with pytest.raises(UnfinishedRunError, match=rf"^{folder}: this extract run has not finished"):
            classify.run(classify.Config(features=str(features)), tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()
    shutil.copy(reference.parent / "DONE", folder / "DONE")
    out = classify.run(classify.Config(features=str(folder / "features.h5"), classifiers=("logreg",),
                                       include_single=False, tsne=False), tmp_path / "c", progress=False)
    assert (out / "DONE").is_file()


# --- temporary files left by a kill ------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_extract_removes_temps_left_by_a_killed_run(upstream, tmp_path):
    """Fault: a run killed during atomic writes left '.DONE.tmp-<pid>' and '.skipped.tmp-<pid>.csv'.

    The resumed extract removes the temps of dead processes when it starts (a live process's temp
    is left alone) and finishes with none of them in the folder.
    """
    config, _ = upstream
    out = tmp_path / "extract"
    with pytest.raises(extract.ExtractionStopped):
        extract.run(config, out, batch_size=16, progress=False, stop_after=50)
    pid = dead_pid()
    planted = [out / f".DONE.tmp-{pid}", out / f".skipped.tmp-{pid}.csv", out / f".model.tmp-{pid}.keras"]
    for p in planted:
        p.write_text("half")
    alive = out / f".metrics.tmp-{os.getppid()}.json"
    alive.write_text("in flight")
    extract.run(config, out, batch_size=16, progress=False)
    assert not any(p.exists() for p in planted) and alive.exists()
    assert RunFolder(out, "extract", config).done
