"""Config resolution: preset <- --config FILE <- command-line options <- --set key=value."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence

from msagg.data.errors import ConfigError

__all__ = ["ConfigError", "load_config_file", "parse_value", "resolve"]


def _field_types(config_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """Returns (inner type, allows None) for ``X | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def parse_value(key: str, text: str, tp: Any) -> Any:
    """Parses the text of ``--set key=text`` into a value of type ``tp``.

    Supports str, int, float, bool, ``X | None`` ("none" or "null" gives None),
    ``tuple[X, ...]`` (comma-separated; an empty string gives ()) and unions such as ``int | str``
    (the first member type that parses the text: "2" gives 2, "all" gives "all").

    Raises:
        ConfigError: Naming the key, the text and the expected type.
    """
    inner, optional = _strip_optional(tp)
    if optional and text.strip().lower() in ("none", "null"):
        return None
    if typing.get_origin(inner) in (typing.Union, types.UnionType):
        for member in typing.get_args(inner):
            try:
                return parse_value(key, text, member)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={text!r}: expected {inner}")
    try:
        if typing.get_origin(inner) is tuple:
            (item,) = {a for a in typing.get_args(inner) if a is not Ellipsis} or {str}
            parts = [p.strip() for p in text.split(",") if p.strip()]
            return tuple(parse_value(key, p, item) for p in parts)
        if inner is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if inner in (int, float, str):
            return inner(text)
    except ValueError:
        pass
    else:
        raise ConfigError(f"{key}: cannot set a value of type {tp}")
    raise ConfigError(f"{key}={text!r}: expected {getattr(inner, '__name__', inner)}")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Checks a value from a preset or a config file against the field type."""
    inner, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: may not be null")
    if typing.get_origin(inner) is tuple:
        if isinstance(value, str):
            return parse_value(key, value, tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = {a for a in typing.get_args(inner) if a is not Ellipsis} or {str}
        return tuple(_coerce(key, v, item) for v in value)
    accepted = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(inner)
    if accepted is not None:
        if not isinstance(value, accepted) or (inner is not bool and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {inner.__name__}, got {value!r}")
        return inner(value)
    return value


def load_config_file(path: str | Path) -> dict:
    """Reads a JSON or TOML config file into a dict.

    Raises:
        ConfigError: If the file is missing or malformed, naming it.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text config file ({err})") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys")
    return data


def resolve(
    config_cls: type,
    *,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    sets: Sequence[str] = (),
) -> Any:
    """Builds a stage config from its layers, later ones winning.

    Args:
        config_cls: The stage's frozen Config dataclass.
        presets: The stage's presets.
        preset: The chosen preset name (None: the dataclass defaults, i.e. the paper's values).
        config_file: A JSON or TOML file of key/value pairs.
        options: Values of explicit command-line options (None values are ignored).
        sets: ``key=value`` strings, type-checked against the dataclass fields.

    Returns:
        An instance of ``config_cls``.

    Raises:
        ConfigError: For an unknown preset or key, a malformed value, a required key no layer
            gives (named with its option: "pretrain needs cache (--cache or --set cache=...)"),
            or a value the Config's own validation refuses.
    """
    types_ = _field_types(config_cls)
    values: dict[str, Any] = {}

    def merge(source: str, items: Mapping[str, Any]):
        for key, value in items.items():
            if key not in types_:
                raise ConfigError(f"{source}: unknown key {key!r}; known keys: {', '.join(types_)}")
            values[key] = _coerce(key, value, types_[key])

    if preset is not None:
        presets = presets or {}
        if preset not in presets:
            raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(presets) or '(none)'}")
        merge(f"preset {preset}", presets[preset])
    if config_file is not None:
        merge(str(config_file), load_config_file(config_file))
    if options:
        merge("options", {k: v for k, v in options.items() if v is not None})
    for item in sets:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if key not in types_:
            raise ConfigError(f"--set {key}: unknown key; known keys: {', '.join(types_)}")
        values[key] = parse_value(key, text, types_[key])
    missing = [f.name for f in dataclasses.fields(config_cls) if f.init and f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(_missing_message(config_cls, missing, options or {}))
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def _missing_message(config_cls: type, missing: Sequence[str], options: Mapping[str, Any]) -> str:
    """"pretrain needs cache (--cache or --set cache=...)": the keys a config lacks, in the CLI's terms.

    The command's own option is named when it has one (``options`` holds a key per option, None
    when not given); ``--set`` and ``--config FILE`` work for every key.
    """
    module = config_cls.__module__
    what = module.rsplit(".", 1)[-1] if module.startswith("msagg.stages.") else config_cls.__name__
    ways = [f"--{key.replace('_', '-')} or --set {key}=..." if key in options else f"--set {key}=... or --config FILE"
            for key in missing]
    return f"{what} needs " + " and ".join(f"{key} ({way})" for key, way in zip(missing, ways))
