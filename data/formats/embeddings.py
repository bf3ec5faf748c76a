"""The embeddings file ``msagg embed`` writes: per song, the multi-level multi-scale vectors of features.h5.

This docstring is the one place the layout is documented (docs/api.md shows it to users).

HDF5 (``.h5``, the default)::

    attrs
      format           "msagg-embeddings"
      schema_version   int 1
      pretrain         str, the pretrain run (or shipped family) whose models computed the vectors
      sample_rate      int, Hz the models read (files were resampled to it)
      song_pool        str, "mean" | "max" | "meanmax" | "meanstd" (as extract's)
      segments         str, "cover" | "drop" (``msagg.data.segments``)
      precision        str, "float32" | "bf16"
      input_lengths    str, JSON: scale -> samples per segment
      frames           bool, whether /frames and /frame_times are present
    /paths                    str (N,), the songs, in row order (``msagg.data.names.escape_name``)
    /features/<scale>/<tap>   float32 (N, dim): as in features.h5, the tap max-pooled over time
                              within each segment, then pooled over the song (``song_pool``)
    /num_segments/<scale>     int32 (N,), segments per song at that scale
    /frames/<scale>/<tap>     float32 (S, channels), with frames: one row per segment (the tap
                              max-pooled over time), songs one after the other, S the sum of
                              /num_segments/<scale> (song i's rows start at the sum before it)
    /frame_times/<scale>      float64 (S,), with frames: each segment's start, seconds
    /skipped/paths            str (K,), files that could not be read
    /skipped/reasons          str (K,), why, one line each

``.npz``: the same arrays under the same names without the leading ``/`` (``np.load(f)["features/3^9/-1"]``),
and the attributes as one JSON string ``attrs``.

Vector names (``vector_name``) are ``"<scale>/<tap>"`` (``"3^9/-1"``): the path of the dataset
under ``/features``. While ``msagg embed`` runs, each finished song is a small ``.npz`` "part" in
``<out>.parts/`` (``write_part``); ``assemble`` joins them into the file in one pass.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np

from msagg.data.atomic import CheckedFile, atomic_write
from msagg.data.names import escape_name

FORMAT = "msagg-embeddings"
SCHEMA_VERSION = 1
FORMATS = ("h5", "npz")
STRING_DTYPE = h5py.string_dtype("utf-8")
ROWS_PER_WRITE = 256
"""Songs gathered before their rows are appended to the datasets."""


def vector_name(scale: str, tap: str) -> str:
    """``"3^9/-1"``: the name of a (scale, tap) vector, its dataset under ``/features``."""
    return f"{scale}/{tap}"


def scale_of(name: str) -> str:
    """The scale of a vector name (``"3^9/-1"`` -> ``"3^9"``)."""
    return name.rpartition("/")[0]


def format_of(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format to write: ``fmt``, else "npz" for a name ending in ``.npz``, else "h5"."""
    if fmt is None:
        return "npz" if os.fspath(path).lower().endswith(".npz") else "h5"
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


# ---------------------------------------------------------------------------------------------
# Parts: one song each


def write_part(path: Path, song: str, arrays: Mapping[str, np.ndarray] | None = None, reason: str = "") -> None:
    """Writes one song's arrays (or, for a song that could not be read, its reason) atomically.

    Args:
        path: The part file (``.npz``).
        song: The song's path, as given.
        arrays: ``features/<name>``, ``num_segments/<scale>`` and, with frames, ``frames/<name>``,
            ``frame_times/<scale>``.
        reason: Why the song was skipped (then ``arrays`` is None).
    """
    with atomic_write(path) as tmp:
        np.savez(tmp, path=np.array(song), reason=np.array(reason), **dict(arrays or {}))


def read_part(path: Path) -> dict[str, Any]:
    """A part's arrays; ``"path"`` and ``"reason"`` as ``str``."""
    with np.load(path) as z:
        part = {key: z[key] for key in z.files}
    part["path"], part["reason"] = str(part["path"]), str(part["reason"])
    return part


class _Appender:
    """Appends rows to growing HDF5 datasets, ``ROWS_PER_WRITE`` songs at a time."""

    def __init__(self, h5: h5py.File):
        self.h5 = h5
        self.pending: dict[str, list[np.ndarray]] = {}

    def create(self, name: str, shape: tuple[int, ...], dtype) -> None:
        numeric = np.dtype(dtype).kind != "O"  # Fletcher-32 per chunk, as features.h5; text takes no filter
        self.h5.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, fletcher32=numeric,
                               chunks=(max(1, min(4096, (1 << 16) // max(1, 4 * int(np.prod(shape))))), *shape))
        self.pending[name] = []

    def add(self, name: str, rows: np.ndarray) -> None:
        self.pending[name].append(rows)

    def flush(self) -> None:
        for name, parts in self.pending.items():
            if parts:
                rows = np.concatenate(parts)
                ds = self.h5[name]
                ds.resize(ds.shape[0] + rows.shape[0], axis=0)
                ds[-rows.shape[0]:] = rows
                parts.clear()


def assemble(out: Path, fmt: str, parts: Sequence[Path], attrs: Mapping[str, Any], dims: Mapping[str, int],
             channels: Mapping[str, int], frames: bool, work: Path) -> list[tuple[str, str]]:
    """Joins the parts of a collection into the embeddings file, atomically, in one pass over them.

    Args:
        out: The file to write.
        fmt: "h5" or "npz".
        parts: The songs' part files, in row order.
        attrs: The file's attributes (module docstring), without ``format``, ``schema_version``
            and ``frames``.
        dims: Vector name -> song vector length; channels: vector name -> channels (frame width).
        frames: Whether the parts hold frames.
        work: A folder for the HDF5 file an ``.npz`` is made from.

    Returns:
        ``(path, reason)`` of every skipped song, in order.
    """
    if fmt == "npz":
        h5_path = work / "assembled.h5"
        skipped = _write_h5(h5_path, parts, attrs, dims, channels, frames)
        with atomic_write(out) as tmp:
            _h5_to_npz(h5_path, tmp)
        h5_path.unlink()
        return skipped
    with atomic_write(out) as tmp:
        return _write_h5(tmp, parts, attrs, dims, channels, frames)


def _write_h5(path: Path, parts: Sequence[Path], attrs: Mapping[str, Any], dims: Mapping[str, int],
              channels: Mapping[str, int], frames: bool) -> list[tuple[str, str]]:
    raw = CheckedFile(path, "w")
    try:
        with raw.checked(), h5py.File(raw, "w") as h5:
            return _fill(h5, parts, attrs, dims, channels, frames)
    finally:
        raw.close()


def _fill(h5: h5py.File, parts: Sequence[Path], attrs: Mapping[str, Any], dims: Mapping[str, int],
          channels: Mapping[str, int], frames: bool) -> list[tuple[str, str]]:
    h5.attrs.update({"format": FORMAT, "schema_version": SCHEMA_VERSION, "frames": bool(frames), **attrs})
    rows = _Appender(h5)
    rows.create("paths", (), STRING_DTYPE)
    for name, dim in dims.items():
        rows.create(f"features/{name}", (dim,), np.float32)
        if frames:
            rows.create(f"frames/{name}", (channels[name],), np.float32)
    for scale in iter_scales(dims):
        rows.create(f"num_segments/{scale}", (), np.int32)
        if frames:
            rows.create(f"frame_times/{scale}", (), np.float64)
    skipped = []
    for i, file in enumerate(parts):
        part = read_part(file)
        if part["reason"]:
            skipped.append((part["path"], part["reason"]))
            continue
        rows.add("paths", np.array([escape_name(part["path"])], dtype=object))
        for key, value in part.items():
            if key.startswith(("features/", "num_segments/")):
                rows.add(key, np.asarray(value)[None])
            elif frames and key.startswith(("frames/", "frame_times/")):
                rows.add(key, np.asarray(value))
        if (i + 1) % ROWS_PER_WRITE == 0:
            rows.flush()
    rows.flush()
    h5.create_dataset("skipped/paths", data=[escape_name(p) for p, _ in skipped], dtype=STRING_DTYPE)
    h5.create_dataset("skipped/reasons", data=[r for _, r in skipped], dtype=STRING_DTYPE)
    h5.flush()
    return skipped


def _datasets(h5: h5py.File) -> list[str]:
    names: list[str] = []
    h5.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _h5_to_npz(h5_path: Path, out: Path) -> None:
    """Copies every dataset of an embeddings HDF5 file into an uncompressed ``.npz``, a block of
    rows at a time (memory does not grow with the file), and its attributes as ``attrs``."""
    with h5py.File(h5_path, "r") as h5, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("attrs.npy", "w") as f:
            np.lib.format.write_array(f, np.array(json.dumps(_attrs(h5.attrs))))
        for name in _datasets(h5):
            ds = h5[name]
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                if ds.dtype.kind == "O":  # text: small, as a unicode array
                    np.lib.format.write_array(f, np.array(ds.asstr()[()], dtype=str).reshape(ds.shape))
                    continue
                np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(ds.dtype),
                                                         "fortran_order": False, "shape": ds.shape})
                step = max(1, ds.chunks[0] if ds.chunks else ds.shape[0] or 1)
                for lo in range(0, ds.shape[0], step):
                    f.write(np.ascontiguousarray(ds[lo:lo + step]).tobytes())


def _attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """HDF5 attributes as plain Python values."""
    return {key: value.item() if isinstance(value, np.generic) else value for key, value in attrs.items()}


def read_embeddings(path: str | os.PathLike) -> dict[str, Any]:
    """Reads an embeddings file (either format) whole.

    Returns:
        ``{"attrs": dict, "paths": list[str], "skipped": list[(path, reason)], "features/<name>",
        "num_segments/<scale>", ... : numpy arrays}``: every array under its name (module docstring).

    Raises:
        ValueError: For a file that is not an embeddings file of this schema version.
    """
    path = Path(path)
    if format_of(path) == "npz":
        with np.load(path) as z:
            out = {key: z[key] for key in z.files}
        attrs = json.loads(str(out.pop("attrs")))
        text = {key: [str(v) for v in out.pop(key)] for key in ("paths", "skipped/paths", "skipped/reasons")}
    else:
        with h5py.File(path, "r") as h5:
            attrs = _attrs(h5.attrs)
            text = {key: list(h5[key].asstr()[()]) for key in ("paths", "skipped/paths", "skipped/reasons")}
            out = {name: h5[name][()] for name in _datasets(h5) if name not in text}
    if attrs.get("format") != FORMAT or attrs.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: not an embeddings file of schema version {SCHEMA_VERSION}")
    out.update(attrs=attrs, paths=text["paths"], skipped=list(zip(text["skipped/paths"], text["skipped/reasons"])))
    return out


def part_arrays(vectors: Mapping[str, np.ndarray], num_segments: Mapping[str, int],
                frames: Mapping[str, np.ndarray] | None = None,
                times: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The arrays of one song's part, under their names in the embeddings file."""
    arrays = {f"features/{name}": np.asarray(v, np.float32) for name, v in vectors.items()}
    arrays.update({f"num_segments/{scale}": np.int32(n) for scale, n in num_segments.items()})
    for name, rows in (frames or {}).items():
        arrays[f"frames/{name}"] = np.asarray(rows, np.float32)
    for scale, starts in (times or {}).items():
        arrays[f"frame_times/{scale}"] = np.asarray(starts, np.float64)
    return arrays


def iter_scales(names: Iterable[str]) -> list[str]:
    """The scales of vector names, in order, once each."""
    return list(dict.fromkeys(scale_of(name) for name in names))
