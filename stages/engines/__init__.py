"""Where prepare decodes and extract computes: the engines, one entry each, named by ``--engine``.

An engine is a pair of modules, imported only when a run uses that engine (so the local engine never
loads Ray, and nothing here loads Keras):

- prepare's (``Engine.decode``): ``decoder(config, workers, options)``, a context manager yielding
  what ``decode_all`` hands the shards to (None: this machine's processes). Entered before the run
  folder is written, so an engine that cannot start leaves nothing behind.
- extract's (``Engine.extract``): ``connect(config)``, a context manager entered before the run folder
  is written (for the same reason), then ``extractor(connection, config, cache, pretrain, scales,
  batch_size, **options)``, a context manager yielding an object with ``scale_infos()`` (scale ->
  ``ScaleInfo``), ``rows(start)`` (``(k, features, num_segments, classic)`` blocks from row ``start``
  on, in cache order) and ``summary()`` (what the run's DONE records of the engine, or {}).

A new engine is one entry in ``ENGINES`` and its two modules; the stages' configs and the CLI's
``--engine`` choices and help come from here.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

from msagg.data.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Engine:
    """One engine.

    Attributes:
        name: What ``--engine`` takes.
        description: One phrase for the CLI's help.
        decode: prepare's module (import path).
        extract: extract's module (import path).
        takes_address: Whether ``--address`` (a cluster to join) applies.
    """

    name: str
    description: str
    decode: str
    extract: str
    takes_address: bool = False

    def module(self, stage: str) -> ModuleType:
        """The engine's module for ``stage`` ("decode" or "extract"), imported now."""
        return importlib.import_module(getattr(self, stage))


ENGINES: dict[str, Engine] = {engine.name: engine for engine in (
    Engine("local", "processes of this machine, the default", "msagg.stages.engines.decode",
           "msagg.stages.engines.local_extract"),
    Engine("ray", "a Ray cluster: one task per shard (prepare), actors over ranges of tracks (extract); "
           "the same files; needs pip install '.[ray]'", "msagg.stages.engines.ray_decode",
           "msagg.stages.engines.ray_extract", takes_address=True),
)}

ADDRESS_HELP = ("With --engine ray: a running Ray cluster (HEAD:6379); default: a Ray cluster of this machine's "
                "cores, started for the run. The run folders must be on a filesystem every node sees.")
"""The help of ``--address``, the same for every stage."""


def describe_engines() -> str:
    """The engines for a help text: ``local (...) or ray (...)``."""
    return " or ".join(f"{e.name} ({e.description})" for e in ENGINES.values())


def check_engine(engine: str, address: str | None, prefix: str = "") -> None:
    """Checks a Config's ``engine`` and ``address`` (both ``RUNTIME`` fields).

    Raises:
        ConfigError: ``prefix`` then the bad value and what is expected.
    """
    if engine not in ENGINES:
        raise ConfigError(f"{prefix}engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if address is not None and (not ENGINES[engine].takes_address or not isinstance(address, str)
                                or not address.strip()):
        raise ConfigError(f"{prefix}address {address!r}: a Ray cluster address (HOST:PORT), only with engine ray")
