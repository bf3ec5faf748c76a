"""Faults in the files prepare reads, planted for real: names that are not text, truncated audio,
a prepare killed mid-decode. Each test's docstring says which fault it plants."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from msagg.data import audio
from msagg.data.formats.cache import AudioCache
from msagg.data.names import escape_name, unescape_name
from msagg.stages import prepare

RATE = 8000
REPO = Path(__file__).resolve().parents[1]


def wav_bytes(value: float, num_frames: int = 800, sample_rate: int = RATE) -> bytes:
    """A mono 16-bit WAV file holding ``value`` in every sample."""
    buffer = io.BytesIO()
    sf.write(buffer, np.full(num_frames, value, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def plant(root: bytes, relative: bytes, content: bytes) -> bytes:
    """Writes ``content`` at the byte path ``root/relative``; returns that path."""
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(content)
    return path


def run_prepare(source, out, **kwargs):
    config = prepare.Config(dataset="folder", source=os.fsdecode(source), sample_rate=RATE, strict=kwargs.pop("strict", False))
    return prepare.run(config, out, progress=False, **kwargs)


def read_skipped(out: Path) -> list[list[str]]:
    text = (out / "skipped.csv").read_bytes().decode("utf-8")  # strict: the file is valid UTF-8
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == len(text.splitlines()), "a row of skipped.csv spans several lines"
    return rows


def test_names_that_are_not_text_are_decoded_and_reported_escaped(tmp_path):
    """Fault: file and folder names that are not UTF-8 (Latin-1 bytes), hold a newline or start
    with a dash, among ordinary ones; one of them is also corrupt audio."""
    root = os.fsencode(tmp_path / "corpus")
    planted = {  # byte path relative to root -> the value every sample holds
        b"a/caf\xe9.wav": 0.1,
        b"a/new\nline.wav": 0.2,
        b"a/-leading dash.wav": 0.3,
        b"a/--.wav": 0.35,
        b"a/plain.wav": 0.4,
        b"a/back\\slash.wav": 0.45,
        b"b\xe9/\xff\xfe.wav": -0.1,
        b"b\xe9/tab\there.wav": -0.2,
    }
    planted.update({f"{c}/{i}.wav".encode() if c == "a" else b"b\xe9/%d.wav" % i: 0.5 + 0.01 * i
                    for c in ("a", "b") for i in range(3)})
    for relative, value in planted.items():
        plant(root, relative, wav_bytes(value))
    bad = plant(root, b"b\xe9/bad \xff\nname.wav", b"RIFF\x10\x00\x00\x00WAVEnonsense" * 8)

    out = tmp_path / "run"
    path = run_prepare(os.fsdecode(root), out, workers=2)

    with AudioCache(path) as cache:
        assert cache.label_names == ["a", "b\\xe9"]
        assert cache.num_tracks == len(planted)
        for i, (track_id, source) in enumerate(zip(cache.track_ids, cache.sources)):
            file_name = os.fsencode(unescape_name(source))  # the way back to the file
            relative = os.path.relpath(file_name, root)
            assert os.path.isfile(file_name) and track_id == escape_name(os.fsdecode(relative)[:-4])
            np.testing.assert_allclose(cache.track(i), planted[relative], atol=4 / 32768)  # two roundings
        assert {"a/caf\\xe9", "a/new\\nline", "a/-leading dash", "a/back\\\\slash", "b\\xe9/\\xff\\xfe",
                "b\\xe9/tab\\there"} <= set(cache.track_ids)
        escaped_bad = os.fsdecode(root) + "/b\\xe9/bad \\xff\\nname.wav"
        assert [source for source, _ in cache.skipped] == [escaped_bad]
    rows = read_skipped(out)
    assert rows[0] == ["source", "reason"] and len(rows) == 2
    assert rows[1][0] == escaped_bad and os.fsencode(unescape_name(rows[1][0])) == bad
    assert rows[1][1].startswith("cannot decode: corrupt or unsupported audio")


def test_strict_mode_names_a_file_that_is_not_text_readably(tmp_path):
    """Fault: a corrupt file whose name is not UTF-8, with --strict."""
    root = os.fsencode(tmp_path / "corpus")
    for c in (b"a", b"b"):
        for i in range(3):
            plant(root, b"%s/%d.wav" % (c, i), wav_bytes(0.1))
    plant(root, b"b/caf\xe9.wav", b"RIFF\x10\x00\x00\x00WAVEnonsense" * 8)
    with pytest.raises(prepare.PrepareError, match=r"/b/caf\\xe9\.wav: cannot decode.*strict mode") as err:
        run_prepare(os.fsdecode(root), tmp_path / "run", workers=1, strict=True)
    str(err.value).encode("utf-8")


def truncated_wav(path: Path) -> Path:
    """A valid 10 s WAV at 22050 Hz (220500 frames) cut to its header and 245 frames."""
    sf.write(path, np.full(220500, 0.25, dtype=np.float32), 22050, subtype="PCM_16")
    data = path.read_bytes()
    assert sf.info(path).frames == 220500 and len(data) == 44 + 2 * 220500
    path.write_bytes(data[: 44 + 2 * 245])
    return path


def test_truncated_wav_is_skipped_with_the_frames_it_lacks(tmp_path):
    """Fault: a WAV whose header announces 220500 frames cut after 245 of them (libsndfile reads
    the 245 without complaint)."""
    corpus = tmp_path / "corpus"
    for cls in ("a", "b"):
        for i in range(3):
            (corpus / cls).mkdir(parents=True, exist_ok=True)
            (corpus / cls / f"{i}.wav").write_bytes(wav_bytes(0.1))
    cut = truncated_wav(corpus / "a" / "cut.wav")
    assert sf.read(cut)[0].shape == (245,)
    with pytest.raises(audio.AudioError, match=r"cut\.wav: truncated: 245 of 220500 frames"):
        audio.load(cut, RATE)

    out = tmp_path / "run"
    with AudioCache(run_prepare(corpus, out, workers=1)) as cache:
        assert cache.num_tracks == 6 and str(cut) not in cache.sources
        assert [s for s, _ in cache.skipped] == [str(cut)]
    rows = read_skipped(out)
    assert rows[1][0] == str(cut) and rows[1][1].startswith("truncated: 245 of 220500 frames")
    with pytest.raises(prepare.PrepareError, match=r"cut\.wav: truncated: 245 of 220500 frames.*strict"):
        run_prepare(corpus, tmp_path / "strict", workers=1, strict=True)


# ------------------------------------------------------------------------------------- orphans


def children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (zombies, which are dead, left out)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pid and stat[0] != "Z":
                found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, from /proc/<pid>/stat; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ", comm may hold spaces
    return fields[0], int(fields[1])


def wait_until(condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, **kwargs)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_prepare_killed_mid_decode_leaves_no_worker_running(tmp_path):
    """Fault: SIGKILL of a prepare with 2 decoding workers, in the middle of decoding."""
    # 300 tracks (links to one 4 s file at 44.1 kHz, resampled): seconds of decoding on 2 workers.
    corpus, out = tmp_path / "corpus", tmp_path / "run"
    one = tmp_path / "one.wav"
    sf.write(one, np.full(4 * 44100, 0.1, dtype=np.float32), 44100, subtype="PCM_16")
    for cls in ("a", "b"):
        (corpus / cls).mkdir(parents=True)
        for i in range(150):
            (corpus / cls / f"{i}.wav").symlink_to(one)
    parent = python(f"""
        from msagg.stages import prepare
        config = prepare.Config(dataset="folder", source={str(corpus)!r})
        prepare.run(config, {str(out)!r}, workers=2, progress=False)
    """, stderr=subprocess.DEVNULL)
    spawned: set[int] = set()
    try:
        def decoding():
            spawned.update(children(parent.pid))
            return len(spawned) >= 2 and any((out / "cache").glob(".shard-*.tmp-*.h5"))

        assert wait_until(decoding, timeout=60), "prepare did not start decoding"
        assert parent.poll() is None and not (out / "cache" / "index.h5").exists()  # mid-decode
        spawned.update(children(parent.pid))
        parent.kill()
        parent.wait()
        survivors = set(spawned)
        assert wait_until(lambda: not [p for p in survivors if alive(p)], timeout=5), \
            f"processes left running after prepare was killed: {[p for p in survivors if alive(p)]}"
        assert not (out / "DONE").exists()
    finally:
        parent.kill()
        kill_all(spawned)


def test_prepare_killed_mid_run_resumes_to_the_same_cache(tmp_path):
    """Fault: SIGKILL of a prepare process after some shards are written, one in flight.

    The killed run leaves finished shards and the temporary file of the shard in flight; the
    re-run removes the temporary file, keeps the finished shards (decoding only the others) and
    ends with a cache equal, sample for sample and table for table, to an uninterrupted run's.
    """
    rng = np.random.default_rng(11)
    corpus = tmp_path / "corpus"
    for i in range(40):  # distinct audio, 0.5-1.5 s at 16 kHz, resampled to 8 kHz
        path = corpus / ("ab"[i % 2]) / f"{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, 0.2 * rng.standard_normal(8000 + 400 * i).astype(np.float32), 16000, subtype="PCM_16")
    (corpus / "a" / "99.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnonsense" * 8)  # skipped, in its shard
    out, reference = tmp_path / "run", tmp_path / "reference"
    run_prepare(corpus, reference, workers=1)
    # Decoding is slowed in the killed process only, so the kill lands mid-run.
    parent = python(f"""
        import time
        from msagg.stages.engines import decode
        from msagg.stages import prepare
        real = decode.load_source
        decode.load_source = lambda *args: (time.sleep(0.15), real(*args))[1]
        config = prepare.Config(dataset="folder", source={str(corpus)!r}, sample_rate={RATE})
        prepare.run(config, {str(out)!r}, workers=1, progress=False)
    """, stderr=subprocess.DEVNULL)
    try:
        # Four shards finished and the next one's temporary file made (not the instant between the two).
        assert wait_until(lambda: len(list((out / "cache").glob("shard-*.h5"))) >= 4
                          and any((out / "cache").glob(".shard-*.tmp-*")), timeout=120), "prepare wrote no shards"
        parent.kill()
        parent.wait()
    finally:
        parent.kill()
    left = sorted(p.name for p in (out / "cache").iterdir())
    assert not (out / "DONE").exists() and "index.h5" not in left
    assert len([n for n in left if n.startswith("shard-")]) < 21 and [n for n in left if ".tmp-" in n]

    path = run_prepare(corpus, out, workers=1)
    assert json.loads((out / "DONE").read_text())["num_decoded_this_run"] < 41 - 4 * 2
    assert not [p for p in path.iterdir() if p.name.startswith(".")]  # the killed run's temp is gone
    assert sorted(p.name for p in path.iterdir()) == sorted(p.name for p in (reference / "cache").iterdir())
    with h5py.File(path / "index.h5", "r") as a, h5py.File(reference / "cache" / "index.h5", "r") as b:
        assert dict(a.attrs) == dict(b.attrs)
        names, others = [], []
        a.visit(names.append)
        b.visit(others.append)
        assert names == others and "shards/sha256" in names
        for name in names:
            if isinstance(a[name], h5py.Dataset):
                text = h5py.check_string_dtype(a[name].dtype) is not None
                x, y = (a[name].asstr()[()], b[name].asstr()[()]) if text else (a[name][()], b[name][()])
                assert x.tolist() == y.tolist(), name
    with AudioCache(path) as a, AudioCache(reference) as b:
        assert a.shard_sha256 == b.shard_sha256 and a.skipped == b.skipped and a.num_tracks == 40
        for i in range(a.num_tracks):
            assert a.track(i).tobytes() == b.track(i).tobytes()


def test_a_temp_whose_writer_still_looks_alive_is_gone_when_the_resumed_run_ends(tmp_path):
    """Fault: a killed prepare's decoding worker is still exiting (alive, or a zombie not yet
    reaped) when the re-run starts, so its shard's temp file is not stale yet; the re-run, which
    holds the folder's lock and has joined its own workers, removes it before DONE.
    Found by a kill campaign: 2 of 6 kills of a 2-worker prepare left such a temp behind."""
    corpus = tmp_path / "corpus"
    for i in range(12):
        path = corpus / ("ab"[i % 2]) / f"{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wav_bytes(0.01 * (i + 1), num_frames=800 + 80 * i))
    out = tmp_path / "run"
    cache = run_prepare(corpus, out, workers=1)
    reference = sorted(p.name for p in cache.iterdir())
    # As a kill leaves it: no DONE, no index, a shard in flight; its writer still alive.
    (out / "DONE").unlink()
    (cache / "index.h5").unlink()
    (cache / "shard-00001.h5").unlink()
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        temp = cache / f".shard-00001.tmp-{writer.pid}.h5"
        temp.write_bytes(b"half a shard")
        run_prepare(corpus, out, workers=1)
        assert not temp.exists()
    finally:
        writer.kill()
        writer.wait()
    assert sorted(p.name for p in cache.iterdir()) == reference
    assert json.loads((out / "DONE").read_text())["num_decoded_this_run"] < 12


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_a_zombie_writer_counts_as_gone():
    """A killed process not yet reaped (a zombie) writes nothing more: its temps are stale."""
    from msagg.data import atomic
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    assert wait_until(lambda: Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
                      timeout=30)
    try:
        assert not atomic._alive(child.pid)
    finally:
        child.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_worker_without_parent_death_signal_still_ends_with_its_parent(tmp_path):
    """Fault: the parent of a worker dies where the kernel sends it no signal (the portable
    fallback, forced here): the worker's watcher thread must end it."""
    middle = python("""
        import subprocess, sys, time
        code = ("import time\\n"
                "from msagg.stages.engines import decode\\n"
                "decode._kill_at_parent_death = lambda: False\\n"
                "decode.PARENT_POLL_SEC = 0.05\\n"
                "import os; decode._worker_init(os.getppid())\\n"
                "print('ready', flush=True)\\n"
                "time.sleep(60)\\n")
        worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert worker.stdout.readline() == "ready\\n"
        print(worker.pid, flush=True)
        time.sleep(60)
    """, stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(middle.stdout.readline())
        assert alive(worker)
        middle.kill()
        middle.wait()
        assert wait_until(lambda: not alive(worker), timeout=5), "the worker outlived its parent"
    finally:
        middle.kill()
        if worker is not None:
            kill_all([worker])


def test_worker_whose_parent_is_already_gone_exits_at_once():
    """Fault: the parent dies before the worker's initializer ran (it would wait forever)."""
    child = python("""
        from msagg.stages.engines import decode
        decode._worker_init(1 if __import__("os").getppid() != 1 else 2)
        print("still running")
    """, stdout=subprocess.PIPE, text=True)
    stdout, _ = child.communicate(timeout=30)
    assert child.returncode == 1 and stdout == ""
