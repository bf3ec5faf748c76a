"""Every attribute and dataset of an HDF5 file as plain values, to compare two files with a readable difference."""

from __future__ import annotations

from pathlib import Path

import h5py


def contents(path: Path) -> dict:
    """Every attribute of every object and every dataset of an HDF5 file: values, dtype, shape, chunks, filters."""
    out = {}

    def visit(name, obj):
        entry = {"attrs": {k: repr(v) for k, v in obj.attrs.items()}}
        if isinstance(obj, h5py.Dataset):
            values = obj.asstr()[...].tolist() if h5py.check_string_dtype(obj.dtype) else obj[...].tobytes()
            entry.update(values=values, dtype=str(obj.dtype), shape=obj.shape, chunks=obj.chunks,
                         fletcher32=obj.fletcher32, compression=obj.compression)
        out[name] = entry

    with h5py.File(path, "r") as h5:
        visit("/", h5)
        h5.visititems(visit)
    return out
