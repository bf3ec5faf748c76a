"""The Ray session the ray engines share (extract's actors, prepare's decode tasks): import, probe, start, code.

Ray is imported only inside these functions, and nothing here imports keras, so prepare's engine
(``msagg.stages.engines.ray_decode``) starts no backend. ``msagg.stages.engines.ray_extract`` (extract) re-exports these names.

- ``session(address)`` connects to a cluster (after a socket probe, so an unreachable address
  fails in seconds) or starts one of this machine's cores; a missing Ray is a one-line
  ``RayEngineError`` naming the install command. A stage calls it before writing anything.
- Workers run the driver's own code: in a session ``session`` starts, the ``msagg`` package (gathered
  into one folder by ``code_folder``, whether msagg is installed or run from its checkout) travels as
  the job's ``py_modules`` runtime environment (Ray uploads it), so a cluster needs only msagg's
  dependencies installed; in a session someone else started (a test, a library caller) the workers
  get that folder's parent first on ``PYTHONPATH`` (``code_env``).
  Either way each worker reports its ``code_fingerprint``, which the driver compares with its own,
  since an installed msagg of another version would be found first otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

from msagg.data.errors import MsaggError
from msagg.stages.runs import interrupt

logger = logging.getLogger(__name__)

MIN_RAY = (2, 9)
INSTALL_HINT = "pip install -e '.[ray]'"
"""How to install the ray extra (from the repository root)."""

PROBE_TIMEOUT_SEC = 5.0
"""How long the socket probe of ``--address`` waits (``ray.init`` itself retries for minutes)."""

NAMESPACE = "msagg"
"""The Ray namespace of the jobs ``session`` starts: the engines know by it that their code was uploaded."""

DEFAULT_PORTS = {"": 6379, "ray": 10001}
"""The port of an address without one: the head's GCS port, or Ray Client's for ``ray://``."""

CODE_PACKAGES = ("msagg", "msagg.pipeline", "msagg.stages", "msagg.data", "msagg.models")
"""msagg and the sub-packages mapped onto the checkout's top-level folders (they need not sit inside it)."""
"""The packages workers import (``pipeline`` stays on the driver)."""


class RayEngineError(MsaggError):
    """A ray engine cannot run: Ray is missing, its cluster is unreachable, or a worker kept dying."""


def require_ray(stage: str = "extract"):
    """Imports Ray.

    Args:
        stage: The stage that asks (named in the message).

    Returns:
        The ``ray`` module.

    Raises:
        RayEngineError: If Ray is not installed (or older than 2.9), with the install command.
    """
    try:
        import ray
    except ImportError:
        raise RayEngineError(f"{stage} --engine ray needs Ray, which is not installed here; install it with "
                             f"{INSTALL_HINT} (or pip install 'ray>=2.9')") from None
    version = tuple(int(p) for p in ray.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_RAY:
        raise RayEngineError(f"{stage} --engine ray needs Ray >= 2.9, found {ray.__version__}; "
                             f"upgrade it with {INSTALL_HINT}")
    return ray


def split_address(address: str) -> tuple[str, int]:
    """The host and port of a Ray address ("HOST:PORT", "HOST", "ray://HOST:PORT", "[::1]:6379").

    Raises:
        RayEngineError: For a port that is not a number.
    """
    scheme, sep, rest = address.strip().partition("://")
    if not sep:
        scheme, rest = "", address.strip()
    rest = rest.split("/", 1)[0]
    host, colon, port = rest.rpartition(":")
    if not colon or host.endswith(":") or (":" in host and not host.startswith("[")):  # "HOST" or a bare IPv6
        host, port = rest, ""
    host = host.strip("[]")
    if not port:
        return host, DEFAULT_PORTS.get(scheme, 6379)
    if not port.isdigit():
        raise RayEngineError(f"--address {address!r}: the port {port!r} is not a number")
    return host, int(port)


def probe(address: str, timeout: float = PROBE_TIMEOUT_SEC) -> None:
    """Checks that something listens at a Ray address, within ``timeout`` seconds.

    ``ray.init`` keeps retrying an address nobody answers for minutes; a TCP connection tells
    in seconds. ("auto" is left to Ray, which finds a cluster of this machine or fails at once.)

    Raises:
        RayEngineError: Naming the address and the reason.
    """
    if address.strip() == "auto":
        return
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise RayEngineError(f"cannot reach the Ray cluster at {address} ({reason}); start its head with "
                             f"`ray start --head` or check --address") from None


@contextlib.contextmanager
def session(address: str | None = None, *, num_cpus: int | None = None, stage: str = "extract") -> Iterator[Any]:
    """Connects to a Ray cluster, or starts one of this machine's cores, for the length of a run.

    A session this process already has (``ray.is_initialized()``: a test, a library caller) is
    used as it is and left running; one this call starts is shut down at the end.

    Args:
        address: A running cluster ("HOST:6379", "ray://HOST:10001", "auto"); None starts a
            local cluster (``RAY_ADDRESS`` is not read: pass the address).
        num_cpus: CPUs of the local cluster (default: the cores this process may use).
        stage: The stage that asks (named in the message when Ray is missing).

    Yields:
        The ``ray`` module.

    Raises:
        RayEngineError: Ray is missing, or the address cannot be reached or joined.
    """
    ray = require_ray(stage)
    if address:
        probe(address)
    if ray.is_initialized():
        logger.info("ray: using this process's Ray session")
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a tool run reports nothing anywhere
    verbose = logger.isEnabledFor(logging.DEBUG)
    options: dict[str, Any] = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING,
                               "runtime_env": {"py_modules": [str(code_folder())]}, "namespace": NAMESPACE}
    if not verbose:  # "token authentication is enabled" (Ray's default for a local cluster) at every run
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(address="local", num_cpus=num_cpus or len(os.sched_getaffinity(0)), include_dashboard=False,
                     **options)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise RayEngineError(f"cannot start or join {where}: {first_line(err)}") from None
    finally:
        interrupt.reinstall()  # ray.init sets its own SIGTERM handler, which would exit with status 1
    try:
        resources = ray.cluster_resources()
        logger.info("ray: %s, %d CPUs, %d GPUs", f"cluster at {address}" if address else "local cluster",
                    int(resources.get("CPU", 0)), int(resources.get("GPU", 0)))
        yield ray
    finally:
        ray.shutdown()


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (Ray's are often long)."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


# ---------------------------------------------------------------------------------------------
# The code workers run


def code_files() -> dict[str, Path]:
    """Every file of msagg's code as this process imports it, by its path inside the package
    (``"stages/extract.py"``, ``"data/splits/gtzan/test.txt"``), caches left out."""
    import importlib

    files: dict[str, Path] = {}
    for name in CODE_PACKAGES:
        folder = Path(importlib.import_module(name).__file__).resolve().parent
        prefix = name.split(".")[1:]
        paths = folder.glob("*.py") if name == "msagg" else folder.rglob("*")
        for path in paths:
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
                files["/".join(prefix + list(path.relative_to(folder).parts))] = path
    return files


_FOLDER: tempfile.TemporaryDirectory | None = None


def code_folder() -> Path:
    """A folder named ``msagg`` holding all of ``code_files`` (copied once per process, removed at its
    exit): what Ray uploads, or what workers of a session msagg did not start put on their path."""
    global _FOLDER
    if _FOLDER is None:
        folder = tempfile.TemporaryDirectory(prefix="msagg-code-")
        for name, path in code_files().items():
            target = Path(folder.name, "msagg", name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        _FOLDER = folder
    return Path(_FOLDER.name, "msagg")


_FINGERPRINT: str | None = None


def code_fingerprint() -> str:
    """sha256 of msagg's Python sources as this process imports them (names inside the package and bytes).

    Computed once per process: a process's code does not change under it.
    """
    global _FINGERPRINT
    if _FINGERPRINT is None:
        digest = hashlib.sha256()
        for name, path in sorted(code_files().items()):
            if name.endswith(".py"):
                digest.update(f"{name}\0".encode())
                digest.update(path.read_bytes())
        _FINGERPRINT = digest.hexdigest()[:16]
    return _FINGERPRINT


def code_env(ray) -> dict[str, str]:
    """Environment variables that give workers the driver's code: none in a ``session`` job (its
    py_modules hold the code), else ``code_folder``'s parent first on ``PYTHONPATH``."""
    if ray.get_runtime_context().namespace == NAMESPACE:
        return {}
    root = str(code_folder().parent)
    return {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}


def check_code(code: str, where: str = "Ray workers") -> None:
    """Refuses a worker whose ``code_fingerprint`` is not the driver's.

    Raises:
        RayEngineError: Naming both fingerprints and what to do.
    """
    here = code_fingerprint()
    if code != here:
        raise RayEngineError(f"{where} run another msagg than this process (code {code}, here {here}); start them "
                             "from the same msagg, or let msagg start the Ray session (it sends its code)")
