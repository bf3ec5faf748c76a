"""How a stage's process ends on SIGINT or SIGTERM: within seconds, its workers with it, its run folder resumable.

The CLI runs each command inside ``handled()``. The first SIGINT or SIGTERM raises ``Interrupted`` (a
``KeyboardInterrupt``) in the main thread, so the stage unwinds as from any error: its engines stop
their workers (``msagg.stages.engines.decode``, ``msagg.stages.engines.ray_decode``), its run folder's
lock is dropped, and nothing finished is lost (every write is atomic and ``DONE`` comes last, so the
same command resumes). The CLI then calls ``exit_interrupted()``: one line on stderr and the exit status
``128 + signal`` (130 for SIGINT, 143 for SIGTERM), as shells do.

Whatever the code under way does (a C call that does not return, an exception swallowed by a
finalizer, an interpreter exit waiting on a thread), ``GRACE_SEC`` after the first signal, or at once
on a second one, the process kills the processes it started and exits with that status all the
same: what a killed run leaves is resumable too. Nothing here loads a backend or imports click.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
import time
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals ``handled`` turns into ``Interrupted``."""

GRACE_SEC = 4.0
"""How long after the first signal the process may take to end on its own before it is ended."""


class Interrupted(KeyboardInterrupt):
    """The process got SIGINT or SIGTERM while a stage ran (raised in the main thread).

    Attributes:
        signum: The signal's number.
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    def __reduce__(self):
        return type(self), (self.signum,)


_STATE: dict = {"signum": None, "message": "", "told": False, "active": False, "deferred": 0, "resent": 0}
_TOLD = threading.Lock()


def received() -> int | None:
    """The signal that interrupted the command ``handled`` runs, or None."""
    return _STATE["signum"]


def exit_code(signum: int) -> int:
    """The conventional exit status of a process ended by ``signum``: 128 + its number."""
    return 128 + int(signum)


@contextlib.contextmanager
def handled(message: str = "") -> Iterator[None]:
    """Turns SIGINT and SIGTERM into ``Interrupted`` for the length of the block (main thread only).

    Args:
        message: What the line printed on interruption says after "Interrupted by SIGINT" (e.g.
            how to resume); nothing more when empty.

    The handlers in place before are put back when the block ends without a signal. After one,
    these stay until the process ends: a second signal ends it at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _STATE.update(signum=None, message=message, told=False, active=True, resent=0)
    _install()
    try:
        yield
    finally:
        if _STATE["signum"] is None:
            _STATE["active"] = False
            for signum, handler in previous.items():
                if handler is not None:  # None: set outside Python, cannot be put back
                    signal.signal(signum, handler)


def reinstall() -> None:
    """Puts the handlers back inside ``handled`` (a no-op elsewhere), for code that replaced them:
    ``ray.init`` sets its own SIGTERM handler."""
    if _STATE["active"] and threading.current_thread() is threading.main_thread():
        _install()


def _install() -> None:
    for signum in SIGNALS:
        signal.signal(signum, _on_signal)


RETRY_SEC = 0.05
"""How soon a signal that came at an unsafe moment (``_unsafe``) is delivered again."""


def _on_signal(signum: int, frame) -> None:
    if _STATE["resent"]:  # our own re-delivery of the first signal
        _STATE["resent"] -= 1
    elif _STATE["signum"] is not None:  # a second signal from outside: no more waiting
        _end_now(_STATE["signum"])
    else:
        _STATE["signum"] = signum
        threading.Thread(target=_end_later, args=(signum,), name="msagg-interrupted", daemon=True).start()
    if _STATE["deferred"]:
        return  # raised when the deferred block ends
    if _unsafe(frame):
        threading.Timer(RETRY_SEC, _resend, args=(signum,)).start()
        return
    raise Interrupted(signum)


def _resend(signum: int) -> None:
    _STATE["resent"] += 1
    signal.pthread_kill(threading.main_thread().ident, signum)


def _unsafe(frame) -> bool:
    """Whether an exception raised in ``frame`` would be lost or garbled: a garbage-collector callback
    or a weak reference's callback (their exceptions are ignored, with a printed traceback), an
    import, or backend code that C++ called back into (raised there, it comes out as a
    ``SystemError`` with a printed traceback)."""
    if frame is None:
        return False
    if any(getattr(callback, "__code__", None) is frame.f_code for callback in gc.callbacks):
        return True
    name = frame.f_code.co_filename
    return (name.startswith("<frozen importlib") or name.endswith(_WEAKREF_FILES)
            or any(part in name for part in _BACKEND_PATHS))


_WEAKREF_FILES = (f"{os.sep}weakref.py", f"{os.sep}_weakrefset.py")
"""Where the standard library's weak-reference callbacks live (WeakKeyDictionary, WeakSet, ...)."""
_BACKEND_PATHS = (f"{os.sep}tensorflow{os.sep}", f"{os.sep}jax{os.sep}", f"{os.sep}jaxlib{os.sep}")


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block a signal does not break into: raised as ``Interrupted`` when the block ends.

    For short calls into a backend (one forward pass): an exception raised while TensorFlow's C++
    code calls back into Python comes out as a ``SystemError`` with its traceback printed. The
    ``GRACE_SEC`` deadline still holds for a block that does not end.
    """
    _STATE["deferred"] += 1
    try:
        yield
    finally:
        _STATE["deferred"] -= 1
    if _STATE["active"] and _STATE["signum"] is not None and not _STATE["deferred"]:
        raise Interrupted(_STATE["signum"])


def tell() -> None:
    """Prints the line saying the command was interrupted, once (whoever ends the process first)."""
    signum = _STATE["signum"]
    with _TOLD:
        if signum is None or _STATE["told"]:
            return
        _STATE["told"] = True
    name = signal.Signals(signum).name
    text = f"Interrupted by {name}: {_STATE['message']}" if _STATE["message"] else f"Interrupted by {name}."
    with contextlib.suppress(Exception):
        sys.stderr.flush()  # a progress bar's last line first
    with contextlib.suppress(OSError):
        os.write(2, f"{text}\n".encode("utf-8", "replace"))


def exit_interrupted() -> None:
    """Ends an interrupted command: ``tell``, then ``SystemExit`` with ``exit_code``.

    The interpreter then exits as usual (its exit handlers run: a Ray session is shut down), within
    what is left of ``GRACE_SEC``.

    Raises:
        SystemExit: Always.
    """
    _close_progress_bars()
    tell()
    raise SystemExit(exit_code(_STATE["signum"] or signal.SIGINT))


def _close_progress_bars() -> None:
    """Closes the tqdm progress bars still open (kept alive by a reference cycle, they would be closed
    at exit, after the line), so that the line comes after them."""
    bars = getattr(getattr(sys.modules.get("tqdm"), "tqdm", None), "_instances", None)
    for bar in list(bars or ()):
        with contextlib.suppress(Exception):
            bar.close()


def _end_later(signum: int) -> None:
    time.sleep(GRACE_SEC)
    _end_now(signum)


def _end_now(signum: int) -> None:
    """Kills every process this one started (but multiprocessing's resource tracker, which ends by
    itself and cleans up after the others), says so, and exits."""
    for pid in _descendants():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    tell()
    os._exit(exit_code(signum))


def _descendants() -> list[int]:
    """The processes this one started, and theirs, but multiprocessing's resource tracker."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        entries = []
    for name in entries:
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    if not entries:  # no /proc: the processes multiprocessing started
        import multiprocessing

        found = [p.pid for p in multiprocessing.active_children() if p.pid is not None]
    tracker = _resource_tracker_pid()
    return [pid for pid in found if pid != tracker]


def _resource_tracker_pid() -> int | None:
    module = sys.modules.get("multiprocessing.resource_tracker")
    return getattr(getattr(module, "_resource_tracker", None), "_pid", None)
