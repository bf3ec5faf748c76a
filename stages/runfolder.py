"""Run folders: config.json + metadata.json first, outputs next, DONE last."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import logging
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping

from data.atomic import write_json
from data.errors import MsaggError

logger = logging.getLogger(__name__)

PACKAGES = ("msagg", "numpy", "h5py", "keras", "tensorflow", "jax", "scikit-learn", "soundfile", "soxr")


class RunConflictError(MsaggError):
    """The run folder holds a different config and overwriting was not asked for."""


def config_dict(config: Any) -> dict:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def config_hash(config: Any) -> str:
    """12 hex digits of the sha256 of the config's sorted JSON."""
    data = config if isinstance(config, Mapping) else config_dict(config)
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_config(run_dir: str | Path) -> dict:
    """Reads a finished run folder's config.json.

    Raises:
        MsaggError: If the folder has no DONE marker or no config.json, naming the folder.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise MsaggError(f"{run_dir}: not a run folder (no config.json)")
    if not (run_dir / "DONE").is_file():
        raise MsaggError(f"{run_dir}: this run has not finished (no DONE marker); run its stage first")
    return json.loads((run_dir / "config.json").read_text())


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return res.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class RunFolder:
    """One stage's output folder.

    Args:
        out_dir: The folder.
        stage: Stage name ("prepare", "pretrain", ...).
        config: The stage's resolved config dataclass.
        upstream: Named upstream run folders; their config hashes are recorded.
    """

    def __init__(self, out_dir: str | Path, stage: str, config: Any, upstream: Mapping[str, str | Path] | None = None):
        self.path = Path(out_dir)
        self.stage = stage
        self.config = config
        self.config_json = config_dict(config)
        self.hash = config_hash(self.config_json)
        self.upstream = {k: Path(v) for k, v in (upstream or {}).items()}

    @property
    def done(self) -> bool:
        """Whether this folder holds a finished run of this very config."""
        return (self.path / "DONE").is_file() and self._stored_hash() == self.hash

    def _stored_hash(self) -> str | None:
        cfg = self.path / "config.json"
        if not cfg.is_file():
            return None
        try:
            return config_hash(json.loads(cfg.read_text()))
        except (OSError, json.JSONDecodeError):
            return None

    def start(self, overwrite: bool = False) -> bool:
        """Prepares the folder.

        Returns:
            False when the same config already finished here (nothing to do), else True.

        Raises:
            RunConflictError: If the folder holds another config and ``overwrite`` is False.
        """
        stored = self._stored_hash()
        if stored is not None and stored != self.hash:
            if not overwrite:
                raise RunConflictError(
                    f"{self.path} holds a {self.stage} run with another config (hash {stored}, "
                    f"this one {self.hash}); choose another output folder or pass --overwrite"
                )
            logger.warning("overwriting %s (old config hash %s)", self.path, stored)
            shutil.rmtree(self.path)
        elif stored == self.hash and (self.path / "DONE").is_file():
            if not overwrite:
                logger.info("%s: %s already done with config %s; nothing to do", self.path, self.stage, self.hash)
                return False
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        logger.info("%s config %s: %s", self.stage, self.hash, json.dumps(self.config_json, sort_keys=True))
        write_json(self.path / "config.json", self.config_json)
        upstream = {}
        for key, folder in self.upstream.items():
            hashed = None
            if (folder / "config.json").is_file():
                hashed = config_hash(json.loads((folder / "config.json").read_text()))
            upstream[key] = {"path": str(folder), "config_hash": hashed}
        write_json(
            self.path / "metadata.json",
            {
                "stage": self.stage,
                "config_hash": self.hash,
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "git_commit": _git_commit(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "packages": _versions(),
                "upstream": upstream,
            },
        )
        return True

    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        """Writes the DONE marker (with an optional summary) last."""
        write_json(
            self.path / "DONE",
            {
                "config_hash": self.hash,
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                **(dict(summary) if summary else {}),
            },
        )
