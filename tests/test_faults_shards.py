"""Planted faults in the shards of an audio cache: damaged HDF5 metadata, on which HDF5 itself can loop forever.

Each test's docstring names the fault it plants and what must happen. Whatever could hang on such
a file runs in a subprocess with a timeout, so that a regression fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

import pretrain_runs
from msagg.data.formats.cache import AudioCache
from msagg.data.formats.cache_writer import write_linked_cache
from msagg.data.integrity import sha256_outside
from msagg.data.tracklist import TrackList
from prepare_runs import make_prepare_run

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 1000
SCALES = ("3^2",)
LENGTHS = [300 + 7 * i for i in range(12)]  # two tracks a shard: 6 shards
DAMAGED = 3  # the shard the faults are planted in: tracks t006, t007
HANG_S = 8  # seconds a plain HDF5 read of a planted shard gets before it counts as hung
TIMEOUT_S = 300  # the most a subprocess of msagg may take before the test fails as hung


def tracklist() -> TrackList:
    n = len(LENGTHS)
    labels = np.zeros((n, 3), dtype=np.uint8)
    labels[np.arange(n), np.arange(n) % 3] = 1
    return TrackList(name="toy", task="tags", label_names=["low", "mid", "high"],
                     track_ids=[f"t{i:03d}" for i in range(n)], sources=[f"s{i}.wav" for i in range(n)],
                     labels=labels, split=["train", "valid", "test"] * (n // 3))


def waves() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(-0.9, 0.9, n).astype(np.float32) for n in LENGTHS]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A finished prepare run of 6 shards and a finished pretrain run (untrained tiny models)."""
    root = tmp_path_factory.mktemp("shards")
    prepared = make_prepare_run(root / "prepare", tracklist(), waves(), sample_rate=SAMPLE_RATE, tracks_per_shard=2)
    pretrain = pretrain_runs.make_pretrain(root / "pretrain", prepared, sample_rate=SAMPLE_RATE, scales=SCALES)
    return prepared, pretrain


def zero_heap_object(path: Path) -> None:
    """Zeroes 16 bytes of the shard's global heap, from the size of its first object on.

    The global heap holds the values of the shard's string attributes; HDF5 reads it when the
    attributes are read, and an object of size 0 makes it loop forever (offset 9000 of the probe's
    shards: the heap's signature ``GCOL``, its 4 flag bytes, its size (8), the object's index,
    reference count and reserved bytes (8), then its size).
    """
    at = path.read_bytes().index(b"GCOL") + 24
    with open(path, "r+b") as fh:
        fh.seek(at)
        fh.write(bytes(16))


def flip_heap_object(path: Path) -> None:
    """Inverts the same 16 bytes (HDF5 then fails at once instead of looping)."""
    data = path.read_bytes()
    at = data.index(b"GCOL") + 24
    with open(path, "r+b") as fh:
        fh.seek(at)
        fh.write(bytes(b ^ 0xFF for b in data[at:at + 16]))


def run_python(code: str, timeout: float) -> subprocess.CompletedProcess | None:
    """Runs ``code`` in a fresh interpreter with this checkout's msagg; None if it ran past ``timeout``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def plain_hdf5_reads_it(shard: Path) -> bool:
    """Whether h5py alone reads the shard's attributes and /audio right (its sha256 attribute that of /audio)."""
    code = f"""
        import hashlib, h5py
        with h5py.File({str(shard)!r}, "r") as f:
            attrs = dict(f.attrs)
            print(str(attrs["sha256"]) == hashlib.sha256(f["audio"][()].astype("<i2").tobytes()).hexdigest())
    """
    result = run_python(code, HANG_S)
    return result is not None and result.returncode == 0 and result.stdout.split() == ["True"]


def expected_problem(cache_dir: Path, shard: int) -> str:
    """What the reader says of a shard whose metadata is not the recorded one: both digests' first 16 digits."""
    with h5py.File(cache_dir / "index.h5", "r") as f:
        recorded = f["shards/meta_sha256"].asstr()[shard]
        ranges = f["shards/audio_ranges"][()]
    found = sha256_outside(cache_dir / f"shard-{shard:05d}.h5", ranges[ranges[:, 0] == shard, 1:].tolist())
    assert found != recorded
    return f"was replaced or damaged (the sha256 of its HDF5 metadata is {found[:16]}, the index records {recorded[:16]})"


@pytest.mark.parametrize("plant", [zero_heap_object, flip_heap_object], ids=["zeroed", "flipped"])
def test_damaged_shard_metadata_is_one_line_naming_the_shard_never_a_hang(tmp_path, upstream, plant):
    """Fault: 16 bytes of a shard's HDF5 metadata (its global heap) zeroed, or inverted.

    Zeroed, a plain HDF5 read of the shard loops forever; inverted, it fails deep inside HDF5.
    Reading the cache's tracks gives the tracks of the other shards as before and, for those of
    the damaged shard, a CacheError naming the cache, the shard, the reason and its tracks,
    before HDF5 parses the shard; a cache linked to it (prepare --audio-from) says the same of
    its audio store; ``msagg extract`` stops with that one line, no traceback, no DONE.
    """
    prepared, pretrain = upstream
    run = tmp_path / "prepare"
    shutil.copytree(prepared, run)  # the run folder as it is (config, DONE, cache)
    index = run / "cache" / "index.h5"
    with AudioCache(run) as store:  # linked before the damage, as a fold of crossval is
        fold = write_linked_cache(tmp_path / "fold" / "cache" / "index.h5", tracklist(), store,
                                  list(range(len(LENGTHS))))
    shard = run / "cache" / f"shard-{DAMAGED:05d}.h5"
    plant(shard)
    assert not plain_hdf5_reads_it(shard)  # the fault is real: HDF5 alone hangs or fails on it

    code = f"""
        from msagg.data.formats.cache import AudioCache, CacheError
        for path in ({str(run)!r}, {str(fold)!r}):
            with AudioCache(path) as cache:
                for i in range(cache.num_tracks):
                    try:
                        print("ok", i, float(abs(cache.track(i)).sum()))
                    except CacheError as err:
                        print("error", i, err)
    """
    result = run_python(code, TIMEOUT_S)
    assert result is not None, "reading the cache hung on the damaged shard"
    assert result.returncode == 0, result.stderr
    problem = expected_problem(run / "cache", DAMAGED)
    lines = result.stdout.splitlines()
    assert len(lines) == 2 * len(LENGTHS)
    expected_sums = {i: float(abs(w).sum()) for i, w in enumerate(waves())}
    damaged = {2 * DAMAGED, 2 * DAMAGED + 1}
    for k, line in enumerate(lines):
        i = k % len(LENGTHS)
        if i not in damaged:
            kind, _, total = line.split(" ", 2)
            assert kind == "ok" and float(total) == pytest.approx(expected_sums[i], rel=1e-3), line
        elif k < len(LENGTHS):
            assert line == (f"error {i} {index}: audio shard {shard} {problem} (tracks t006, t007); "
                            "prepare the dataset again")
        else:
            assert line == (f"error {i} {fold}: its audio lies in {shard}, which {problem} (tracks t006, t007; move "
                            "prepare run folders together, or prepare the dataset again)")

    out = tmp_path / "extract"
    result = run_python(f"""
        import sys
        from msagg.pipeline.cli import main
        sys.argv = ["msagg", "extract", "--pretrain", {str(pretrain)!r}, "--cache", {str(run)!r}, "--out",
                    {str(out)!r}, "--batch-size", "4"]
        main()
    """, TIMEOUT_S)
    assert result is not None, "msagg extract hung on the damaged shard"
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    assert output.splitlines()[-1] == (f"Error: {index}: audio shard {shard} {problem} (tracks t006, t007); "
                                       "prepare the dataset again")
    assert "Traceback" not in output
    assert not (out / "DONE").exists()


def test_an_intact_shard_is_checked_once_per_process(tmp_path, upstream, monkeypatch):
    """No fault: the raw-byte check runs once per shard file in a process (reopening reads nothing again),
    reads the shard's metadata only (a small part of it), and runs again once the file changes."""
    from msagg.data import integrity

    prepared, _ = upstream
    run = tmp_path / "prepare"
    shutil.copytree(prepared, run)
    read = []
    real = integrity.sha256_outside

    def counted(path, ranges):
        read.append(os.path.getsize(path) - sum(b - a for a, b in ranges))
        return real(path, ranges)

    monkeypatch.setattr(integrity, "sha256_outside", counted)
    for _ in range(2):
        with AudioCache(run) as cache:
            for i in range(cache.num_tracks):
                cache.track(i)
    sizes = [os.path.getsize(p) for p in sorted((run / "cache").glob("shard-*.h5"))]
    assert len(read) == len(sizes) == 6
    assert all(0 < r < s for r, s in zip(read, sizes))  # the metadata, not the audio chunks
    shard = run / "cache" / "shard-00000.h5"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))  # touched: checked again
    with AudioCache(run) as cache:
        cache.track(0)
    assert len(read) == 7


def test_an_index_of_an_older_msagg_reads_its_shards_unchecked(tmp_path, upstream):
    """No fault: an index without /shards/meta_sha256 (msagg before the check) reads as before."""
    from legacy_cache import as_before_text_sha256

    prepared, _ = upstream
    run = tmp_path / "prepare"
    shutil.copytree(prepared, run)
    as_before_text_sha256(run / "cache" / "index.h5")
    with AudioCache(run) as cache:
        assert cache.shard_meta_sha256 == [""] * 6 and cache.shard_audio_ranges.shape == (0, 3)
        for i, wave in enumerate(waves()):
            np.testing.assert_allclose(cache.track(i), wave, atol=1.5 / 32768)
