"""The records every run folder holds beside its outputs: ``config.json``, ``metadata.json``, ``DONE``.

A stage writes ``config.json`` (``config_dict`` of its Config) and ``metadata.json`` first, its
outputs next, and ``DONE`` (``DONE_FILE``) last: a folder with ``DONE`` holds a finished run. The
config's hash (``config_hash``) names the run; ``DONE`` records it too. ``msagg.stages.runs.folder``
writes these files, ``msagg.stages.runs.upstream`` reads them for the stages downstream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from msagg.data.errors import MsaggError

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
DONE_FILE = "DONE"
"""Written last by every stage (and by pretrain in each scale's folder): the run is finished."""

OMIT_NONE = "omit_none"
"""Field metadata key: a field added to a Config later, left out of config.json (and the hash) while None,
so run folders made before it existed keep their hash (prepare's ``audio_from``)."""
RUNTIME = "runtime"
"""Field metadata key: a Config field that chooses how a stage runs, not what it computes (extract's
``engine`` and ``address``): never in config.json nor the hash, so a run started one way can be
resumed, or found done, another way, and its downstream runs see the same upstream hash."""

OMIT_VALUE = "omit_value"
"""Field metadata key whose value is the field's legacy value: a field added to a Config later, with a
new default, left out of config.json (and the hash) while it holds the legacy value, so run folders
made before it existed keep their hash and read as that value (extract's ``segments``: "drop"),
while runs with the new default hash differently from the old ones."""

OMIT_DEFAULT = "omit_default"
"""Field metadata key: a field added to a Config later, left out of config.json (and the hash) while it
holds its default, so run folders made before it existed keep their hash (prepare's ``shard_mb``,
pretrain's ``devices`` and ``precision``, extract's ``precision``); any other value is recorded and hashed."""


def json_ready(value: Any) -> Any:
    """``value`` as JSON holds it (tuples as lists, anything else JSON lacks as its ``str``)."""
    return json.loads(json.dumps(value, default=str))


def config_dict(config: Any) -> dict:
    """A JSON-ready dict of a config dataclass (tuples become lists; ``OMIT_NONE`` fields left out
    while None, ``OMIT_DEFAULT`` fields while they hold their default, ``OMIT_VALUE`` fields while they
    hold their legacy value, ``RUNTIME`` fields always)."""
    data = json_ready(dataclasses.asdict(config))
    for field in dataclasses.fields(config):
        if field.metadata.get(RUNTIME) or (field.metadata.get(OMIT_NONE) and data.get(field.name) is None):
            data.pop(field.name, None)
        elif OMIT_VALUE in field.metadata and data.get(field.name) == json_ready(field.metadata[OMIT_VALUE]):
            data.pop(field.name)
        elif (field.metadata.get(OMIT_DEFAULT) and field.default is not dataclasses.MISSING
              and field.name in data and data[field.name] == json_ready(field.default)):
            data.pop(field.name)
    return data


def config_hash(config: Any) -> str:
    """12 hex digits of the sha256 of the config's sorted JSON."""
    data = config if isinstance(config, Mapping) else config_dict(config)
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_json_config(path: str | Path) -> dict:
    """Reads a run folder's config.json (or any JSON config file) as a dict.

    Raises:
        MsaggError: If the file cannot be read or is not a JSON object, naming it and the reason.
        FileNotFoundError: If there is no such file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except OSError as err:
        raise MsaggError(f"{path}: cannot read ({err.strerror or err})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MsaggError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise MsaggError(f"{path}: not a config (expected a JSON object of config keys)")
    return data


def read_json_record(path: str | Path) -> dict:
    """A JSON object record of a run folder (``DONE``, ``metadata.json``), leniently: {} when it is
    missing, unreadable or not a JSON object (older runs wrote some of them empty)."""
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
