"""The CLI's shared machinery: logging set-up, user errors vs bugs, and the config options every stage takes."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
import traceback
import typing

import click

from msagg.data.errors import MsaggError
from msagg.data.names import escape_name
from msagg.stages import quiet
from msagg.stages.runs import interrupt

EPILOG_CONFIG = (
    "Config layers, later ones winning: the preset, then --config FILE (JSON or TOML), then the "
    "options above, then each --set key=value (type-checked against the stage's Config)."
)


DEBUG_ENV = "MSAGG_DEBUG"
"""Set to 1 to see the traceback of every error (as ``--debug`` does)."""
BUG_HINT = ("msagg: unexpected error; this is a bug in msagg, please report it with the traceback above "
            "(user errors print one line; --debug or MSAGG_DEBUG=1 shows tracebacks for every error)")

STATE = {"debug": False, "verbose": False}


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    verbose = level.lower() == "debug"
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet.quiet_backend_loggers(verbose)  # the backends' own Python loggers stay quiet unless asked


def friendly_errors(func):
    """User errors (``MsaggError``, ``OSError``) become one-line CLI errors; anything else is a bug.

    A bug shows its traceback and a hint to report it. ``--debug`` (or ``MSAGG_DEBUG=1``) shows the
    traceback of every error. SIGINT and SIGTERM end the command (``msagg.stages.runs.interrupt``)
    with one line saying how to resume, and exit status 130 or 143, whatever else was under way.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        out_dir = kwargs.get("out_dir")
        with interrupt.handled(f"run the same command again to resume ({out_dir} keeps what was finished)"
                               if out_dir else ""):
            try:
                result = _user_errors(func, *args, **kwargs)
            except BaseException:
                if interrupt.received() is None:
                    raise
                if STATE["debug"]:
                    traceback.print_exc()
            else:
                if interrupt.received() is None:
                    return result
        interrupt.exit_interrupted()

    return wrapper


def _user_errors(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except click.ClickException:
        raise
    except (MsaggError, OSError) as err:
        if STATE["debug"]:
            raise
        raise click.ClickException(one_line(err)) from None
    except Exception:
        if STATE["debug"] or interrupt.received() is not None:
            # An interruption raised inside a C extension can surface as another error (a
            # SystemError from TensorFlow, say): the caller reports the interruption, not a bug.
            raise
        traceback.print_exc()
        click.echo(BUG_HINT, err=True)
        sys.exit(2)


def one_line(err: Exception) -> str:
    """An error as one line: a ``MsaggError``'s message, or an ``OSError``'s path(s) and reason."""
    if isinstance(err, OSError) and not isinstance(err, MsaggError):
        where = f"{err.filename}: " if err.filename else ""
        if err.filename and err.filename2:
            where = f"{err.filename} -> {err.filename2}: "
        return f"{where}{err.strerror or err}"
    return str(err)


class FolderPath(click.Path):
    """A path option that names a folder (``kind="folder"``) or a file (``kind="file"``), which need not exist.

    A path that exists as the other kind is a user's slip, not a usage error: one ``Error:`` line
    naming it, exit status 1 (``click.Path`` would print the usage and exit 2, the status of a bug).
    """

    def __init__(self, kind: str = "folder"):
        super().__init__(file_okay=kind == "file", dir_okay=kind == "folder")
        self.kind = kind

    def convert(self, value, param, ctx):
        text = os.fsdecode(value)
        if self.kind == "folder" and os.path.exists(text) and not os.path.isdir(text):
            raise click.ClickException(f"{escape_name(text)}: is a file, not a folder ({_option(param)} takes a folder)")
        if self.kind == "file" and os.path.isdir(text):
            raise click.ClickException(f"{escape_name(text)}: is a folder, not a file ({_option(param)} takes a file)")
        return super().convert(value, param, ctx)


def _option(param) -> str:
    return param.opts[0] if param is not None and param.opts else "this option"


def set_example(config_cls) -> str:
    """``--set`` examples a stage's Config accepts, derived from its fields: "--set seed=1 --set scales=2^13,2^14".

    At most two keys with a default: a seed (one more than its default), then a tuple (its first
    two default items), else a flag (its opposite), each rendered as ``--set`` parses it
    (``pipeline.config.parse_value``). ``tests/test_bad_input.py`` resolves every command's examples.
    """
    hints = typing.get_type_hints(config_cls)
    fields = [f for f in dataclasses.fields(config_cls) if f.default is not dataclasses.MISSING]
    picks = []
    for field in fields:
        if field.name.endswith("seed") and isinstance(field.default, int) and not isinstance(field.default, bool):
            picks.append(f"{field.name}={field.default + 1}")
            break
    for field in fields:
        if typing.get_origin(hints[field.name]) is tuple and field.default:
            picks.append(f"{field.name}={','.join(str(v) for v in list(field.default)[:2])}")
            break
    else:
        flag = next((f for f in fields if hints[f.name] is bool and f.init), None)
        if flag is not None:
            picks.append(f"{flag.name}={str(not flag.default).lower()}")
    return " ".join(f"--set {pick}" for pick in picks[:2])


def config_options(config_cls):
    """The options every stage command takes: --out, --overwrite, --config, --set (its example from ``config_cls``)."""

    def decorate(func):
        example = set_example(config_cls)
        func = click.option(
            "--set",
            "sets",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override one config key" + (f", e.g. {example}" if example else "") + ". Repeatable.",
        )(func)
        func = click.option(
            "--config",
            "config_file",
            type=FolderPath("file"),
            help="A JSON or TOML file of config keys (applied over the preset).",
        )(func)
        func = click.option(
            "--overwrite",
            is_flag=True,
            help="Replace an output folder that holds a run of this stage with a different config (or re-run a "
                 "finished one); another stage's run, or one this run reads, is never replaced.",
        )(func)
        func = click.option(
            "--out",
            "out_dir",
            required=True,
            type=FolderPath(),
            help="Run folder to write (created; re-running a finished identical run is a no-op, an interrupted one "
                 "resumes).",
        )(func)
        return func

    return decorate


CROSSVAL_SETS_PER_FOLD = ("folds", "fold", "split", "audio_from")
"""prepare keys that crossval sets for each fold (from --num-folds; audio_from: its one decoded copy of the
dataset), so it offers no option for them."""
CROSSVAL_SKIPS = CROSSVAL_SETS_PER_FOLD + ("engine", "address")
"""prepare keys crossval offers no option for: those above, and the engine (crossval runs every stage locally)."""


def field_options(config_cls, *, skip=(), required=()):
    """One click option per field of a stage Config, its help text from the field's metadata.

    ``--num-tracks`` for ``num_tracks``; the type from the annotation (``X | None`` gives X), a
    bool is a flag, metadata ``path`` gives a path, metadata ``choices`` a choice among them. An
    option left out is None, so the config's own layers (preset, file, default) decide. The fields
    the class declares itself come first, then the inherited ones (prepare: dataset and source
    before the adapter options).
    """
    hints = typing.get_type_hints(config_cls)
    own = vars(config_cls).get("__annotations__", {})
    fields = [f for f in dataclasses.fields(config_cls) if f.name not in skip and "help" in f.metadata]
    fields.sort(key=lambda f: f.name not in own)

    def decorate(func):
        for field in reversed(fields):  # click lists options in the reverse order of decoration
            args = [a for a in typing.get_args(hints[field.name]) if a is not type(None)]
            kind = args[0] if len(args) == 1 else hints[field.name]
            if kind is bool:
                extra = {"is_flag": True, "default": None}
            elif field.metadata.get("path"):
                extra = {"type": click.Path()}
            elif field.metadata.get("choices"):
                extra = {"type": click.Choice(list(field.metadata["choices"]))}
            else:
                extra = {"type": {int: click.INT, float: click.FLOAT}.get(kind, click.STRING)}
            func = click.option(f"--{field.name.replace('_', '-')}", field.name, help=field.metadata["help"],
                                required=field.name in required, **extra)(func)
        return func

    return decorate
