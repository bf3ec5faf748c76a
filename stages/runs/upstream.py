"""Opening the run of another stage that a stage reads: the one check that it is there, finished and of that stage.

A stage names its upstream runs as the user gave them: a run folder, or a file in one (a prepare
run's ``cache/``, ``index.h5`` or older ``cache.h5``; an extract run's ``features.h5``).
``open_upstream`` resolves that path once into the run folder and the file to read, requires the
folder to hold a finished run (``DONE``, written last) of the expected stage, and reads its
``config.json`` and ``DONE``. The stage then opens ``Upstream.file`` and, once it has read the
config hash the file records, refuses a file of another run (``Upstream.check_file``).
Every message is one line naming the folder (or the file) and the reason.
"""

from __future__ import annotations

import dataclasses
import os
import types
from pathlib import Path
from typing import Any, Mapping

from msagg.data.errors import MsaggError
from msagg.data.formats.cache_layout import cache_file, cache_run_folder
from msagg.data.formats.features import FILE_NAME as FEATURES_FILE
from msagg.data.runs import run_file
from msagg.models import pretrained
from msagg.stages.runs.records import (CONFIG_FILE, DONE_FILE, METADATA_FILE, config_hash, read_json_config,
                                       read_json_record)


class UnfinishedRunError(MsaggError):
    """An upstream run folder that is missing, has not finished (no DONE), holds another stage's run,
    or holds another run's file."""


def upstream_folder(path: str | os.PathLike, stage: str) -> Path:
    """The run folder ``open_upstream(path, stage)`` opens (nothing is checked or read)."""
    return _folder_and_file(Path(path), stage)[0]


def _folder_and_file(path: Path, stage: str) -> tuple[Path, Path | None]:
    """The run folder and the file to read of what the user gave for a run of ``stage``."""
    if stage == "prepare":  # the audio cache: the run folder, cache/, index.h5 or a schema-1 cache.h5
        return cache_run_folder(path), cache_file(path)
    if stage == "extract":  # the features file: the run folder or its features.h5
        file = run_file(path, FEATURES_FILE)
        return file.parent, file
    if stage == "pretrain":  # a run folder, or the name of a family msagg ships ("general")
        return pretrained.resolve(path), None
    return path, None  # a run read as a whole folder (classify, teach)


@dataclasses.dataclass(frozen=True, eq=False)
class Upstream:
    """A finished run of another stage, opened by ``open_upstream``.

    Attributes:
        stage: The stage that made it ("prepare", "pretrain", "extract", "classify").
        folder: The run folder (holding config.json and DONE).
        config: Its config.json (read-only).
        done: Its DONE record (read-only; empty for a DONE that is not a JSON object).
        config_hash: The hash of its config.json (what the run folders downstream record).
        file: The file to read: prepare, the cache's ``index.h5`` (or a schema-1 ``cache.h5``);
            extract, ``features.h5``; None for a run read as a folder.
    """

    stage: str
    folder: Path
    config: Mapping[str, Any]
    done: Mapping[str, Any]
    config_hash: str
    file: Path | None = None

    def check_file(self, file: str | os.PathLike, file_hash: str) -> None:
        """Refuses a file whose recorded config hash differs from the one this run's ``DONE`` holds.

        Either hash missing or empty (files and markers of older versions) is accepted.

        Args:
            file: The file read (for the message).
            file_hash: The config hash the file records.

        Raises:
            UnfinishedRunError: Naming the file and both hashes.
        """
        done_hash = str(self.done.get("config_hash") or "")
        if file_hash and done_hash and file_hash != done_hash:
            raise UnfinishedRunError(f"{file}: written by a run with config hash {file_hash}, but the folder's "
                                     f"{DONE_FILE} marks a run with config hash {done_hash}; run its stage again")


def open_upstream(path: str | os.PathLike, stage: str, *,
                  error: type[MsaggError] = UnfinishedRunError) -> Upstream:
    """Opens a finished run of ``stage`` that another stage reads.

    Args:
        path: What the user gave: the run folder, or a file in it (prepare: its ``cache/``,
            ``index.h5`` or a schema-1 ``cache.h5``; extract: its ``features.h5``).
        stage: The stage that must have made the run; a folder whose metadata.json names another
            is refused (folders without metadata.json are taken as they are).
        error: The error raised (a reader's own ``MsaggError`` subclass, e.g. ``PretrainRunError``).

    Returns:
        The ``Upstream``.

    Raises:
        error: One line naming the folder: it does not exist, holds no config.json, holds a run
            of another stage, or has not finished (no DONE); or naming config.json when it cannot
            be read or is not a JSON object.
    """
    folder, file = _folder_and_file(Path(path), stage)
    if not folder.is_dir():
        if stage == "pretrain" and os.fspath(path) == pretrained.GENERAL:
            raise error(f"general: no general family here (neither {pretrained.GENERAL_RUN} nor the package's own); "
                        "`make pretrain-general` makes it (about 1 h on 2 CPU cores), or name a pretrain run folder")
        raise error(f"{folder}: no such {stage} run folder (run `msagg {stage}` first)")
    if not (folder / CONFIG_FILE).is_file():
        raise error(f"{folder}: not a run folder (no {CONFIG_FILE})")
    other = read_json_record(folder / METADATA_FILE).get("stage")
    if other not in (None, stage):
        raise error(f"{folder}: not a {stage} run (it holds a run of the {other} stage)")
    if not (folder / DONE_FILE).is_file():
        raise error(f"{folder}: this {stage} run has not finished (no {DONE_FILE} marker); "
                    f"run `msagg {stage}` into it again to finish it")
    try:
        config = read_json_config(folder / CONFIG_FILE)
    except FileNotFoundError:  # removed since it was seen
        raise error(f"{folder}: not a run folder (no {CONFIG_FILE})") from None
    except MsaggError as err:
        raise error(str(err)) from None
    return Upstream(stage=stage, folder=folder, config=types.MappingProxyType(config),
                    done=types.MappingProxyType(read_json_record(folder / DONE_FILE)),
                    config_hash=config_hash(config), file=file)
