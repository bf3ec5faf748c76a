"""Atomic writes (temp name in the same folder, renamed on success only), stale temps, write errors."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess

import pytest

from msagg.data.atomic import (TEMP_NAME, CheckedFile, WriteError, atomic_write, remove_stale_temps, stale_temps,
                         stale_temps_in, temp_path, write_json)
from msagg.data.errors import MsaggError


def test_success_renames_and_keeps_suffix(tmp_path):
    target = tmp_path / "sub" / "model.keras"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".keras" and tmp != target
        tmp.write_text("x")
        assert stale_temps(target) == [tmp]
    assert target.read_text() == "x" and stale_temps(target) == []


def test_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert stale_temps(target) == []


@pytest.mark.parametrize("name", ["model.keras", "DONE", "cache.h5", "metrics.json", "skipped.csv", "0001.npy",
                                  "a.tar.gz", "per_label_roc_auc.png", "3^9@last3.keras"])
def test_every_temp_name_is_recognised(tmp_path, name):
    target = tmp_path / name
    tmp = temp_path(target)
    m = TEMP_NAME.match(tmp.name)
    assert m and (m["stem"], m["suffix"] or "") == (target.stem, target.suffix) and tmp.parent == tmp_path
    tmp.write_text("half")
    assert stale_temps(target) == [tmp]
    assert stale_temps_in(tmp_path) == []  # this process is alive: its temp may be in flight
    dead = tmp.with_name(tmp.name.replace(f"tmp-{os.getpid()}", f"tmp-{_dead_pid()}"))
    tmp.rename(dead)
    assert stale_temps(target) == [dead] and stale_temps_in(tmp_path) == [dead]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_remove_stale_temps_looks_in_subfolders_and_spares_other_files(tmp_path):
    pid = _dead_pid()
    stale = [tmp_path / f".DONE.tmp-{pid}", tmp_path / "3^2" / f".model.tmp-{pid}.keras",
             tmp_path / "plots" / f".tsne.tmp-{pid}.png"]
    kept = [tmp_path / "model.keras", tmp_path / ".hidden", tmp_path / f".x.tmp-{os.getppid()}.json",
            tmp_path / "features.h5.partial", tmp_path / f"x.tmp-{pid}.json"]
    for p in stale + kept:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    assert remove_stale_temps(tmp_path) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    assert remove_stale_temps(tmp_path / "missing") == []


def test_write_error_is_one_line_naming_the_file_and_pickles(tmp_path):
    err = WriteError.from_os_error(tmp_path / "DONE", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert str(err) == f"no space left on device while writing {tmp_path / 'DONE'}"
    assert err.errno == errno.ENOSPC and isinstance(err, MsaggError)
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) and copy.errno == errno.ENOSPC


def test_oserror_of_the_body_names_the_final_file(tmp_path):
    target = tmp_path / "a.json"
    with pytest.raises(WriteError, match=rf"^disk quota exceeded while writing {target}$"):
        with atomic_write(target):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    with pytest.raises(FileNotFoundError):  # an error about another file passes unchanged
        with atomic_write(target):
            open(tmp_path / "nothing" / "x")
    assert list(tmp_path.iterdir()) == []


def test_checked_file_writes_a_normal_hdf5_file(tmp_path):
    import h5py
    import numpy as np

    raw = CheckedFile(tmp_path / "x.h5", "w")
    with raw.checked(), h5py.File(raw, "w") as h5:
        h5.create_dataset("a", data=np.arange(100000), chunks=(4096,), fletcher32=True)
        h5.attrs["n"] = 3
    raw.close()
    raw = CheckedFile(tmp_path / "x.h5", "r+")
    with raw.checked(), h5py.File(raw, "r+") as h5:
        h5.attrs["n"] = 4
    raw.close()
    with h5py.File(tmp_path / "x.h5", "r") as h5:
        assert h5.attrs["n"] == 4 and (h5["a"][...] == np.arange(100000)).all()


def test_checked_file_keeps_the_first_failure_and_drops_later_writes(tmp_path, monkeypatch):
    raw = CheckedFile(tmp_path / "x.bin", "w")
    raw.write(b"abc")
    real = os.pwrite

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    assert raw.write(b"def") == 3  # HDF5 is told it worked ...
    monkeypatch.setattr(os, "pwrite", real)
    raw.write(b"ghi")  # ... and nothing more reaches the file
    raw.seek(0)
    assert raw.read(9) == b"abc" + bytes(6) and raw.tell() == 9
    with pytest.raises(WriteError, match=rf"^no space left on device while writing {tmp_path / 'x.bin'}$"):
        raw.check()
    with pytest.raises(WriteError):
        with raw.checked():
            raise OSError("HDF5 read back a dropped block")
    raw.close()
    assert (tmp_path / "x.bin").read_bytes() == b"abc"
