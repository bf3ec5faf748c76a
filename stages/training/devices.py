"""Which devices pretraining computes on: ``--devices N|all`` resolved, and data parallelism through Keras' own API.

One device (the default) is msagg as it always ran: no distribution is set and nothing here touches
the model. More than one is data parallelism, never a hand-rolled gradient all-reduce:

- JAX: ``keras.distribution.DataParallel`` over the chosen devices, made current with its
  ``scope()`` (set on entry, the previous distribution restored on exit, so nothing leaks into
  later code in the same process). Weights are replicated, each batch is split along its first
  axis, and XLA inserts the reductions: the computation is the one-device computation, batch-norm
  statistics and the loss taken over the whole batch, so results differ only by rounding.
- TensorFlow: ``tf.distribute.MirroredStrategy`` over the chosen devices, its ``scope()`` around
  everything that builds, compiles, trains or loads a model. Keras splits each batch over the
  replicas, scales the loss by the number of replicas and sums the gradients; batch-norm
  statistics are those of each replica's part of the batch (Keras' default for
  ``BatchNormalization``) and each replica draws its own dropout masks, so the run is equivalent
  to one device's in distribution, not in its numbers (JAX is the exact path).

The batch rule: ``batch_size`` stays the global batch (the paper's 23 is the batch of one SGD
step, whatever the device count), split evenly over the devices, and the learning rate is
unchanged. So a batch that does not split evenly is refused with the nearest values that do
(``check_batch``).

``tf`` is imported only inside ``data_parallel``, for the TensorFlow backend; the input path
(``msagg.stages.training.crops``) stays free of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from typing import Any, Iterator

from msagg.data.errors import ConfigError

logger = logging.getLogger(__name__)

ALL = "all"
"""``devices="all"``: every device of the default kind (the accelerators, else the CPU devices)."""

PARALLEL_BACKENDS = ("jax", "tensorflow")


class DevicesError(ConfigError):
    """A device request this machine cannot meet (more devices than it has, a backend without data parallelism)."""


def check_request(value: Any) -> int | str:
    """Normalizes a ``devices`` config value: a count >= 1 or "all" (a numeric string becomes an int).

    Raises:
        ConfigError: Naming the bad value.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text == ALL:
            return ALL
        if text.isdigit():
            value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"devices must be a device count >= 1 or '{ALL}', got {value!r}")
    return value


def check_batch(batch_size: int, count: int) -> None:
    """Refuses a global batch that does not split evenly over ``count`` devices, suggesting values that do.

    Raises:
        ConfigError: "batch_size 23 does not split evenly over 2 devices ...; use 22 or 24".
    """
    if count <= 1 or batch_size % count == 0:
        return
    low, high = batch_size // count * count, math.ceil(batch_size / count) * count
    choices = f"{low} or {high}" if low >= count else f"{high}"
    raise ConfigError(
        f"batch_size {batch_size} does not split evenly over {count} devices (batch_size is the global batch "
        f"of one step, divided among the devices); use --set batch_size={choices}, or another device count")


@dataclasses.dataclass(frozen=True)
class Devices:
    """A resolved device request.

    Attributes:
        requested: What the config asked for (a count or "all").
        names: The devices used, as Keras names them ("cpu:0", "gpu:1", ...): on several hosts
            (JAX after ``jax.distributed.initialize()``), those of every host.
        backend: The Keras backend ("tensorflow", "jax", ...).
        num_processes: Processes taking part (one per host; 1 unless JAX runs on several hosts).
        process_index: This process's index among them (0 on one host).
    """

    requested: int | str
    names: tuple[str, ...]
    backend: str
    num_processes: int = 1
    process_index: int = 0

    @property
    def count(self) -> int:
        return len(self.names)

    @property
    def parallel(self) -> bool:
        """Whether the run is data parallel (more than one device)."""
        return self.count > 1

    def describe(self) -> dict[str, Any]:
        """What run folders record: ``{"requested", "count", "names", "backend"}``, and
        ``"processes", "process_index"`` on several hosts."""
        out = {"requested": self.requested, "count": self.count, "names": list(self.names), "backend": self.backend}
        if self.num_processes > 1:
            out.update(processes=self.num_processes, process_index=self.process_index)
        return out

    def batch_multiple(self, batch_size: int) -> int:
        """``batch_size`` rounded up to a multiple of the device count (evaluation batches, which are padded)."""
        return math.ceil(batch_size / self.count) * self.count


def _processes(backend: str) -> tuple[int, int]:
    """(number of processes, this one's index): JAX's after ``jax.distributed.initialize()``, else (1, 0)."""
    if backend != "jax":
        return 1, 0
    import jax

    return int(jax.process_count()), int(jax.process_index())


def available() -> list[str]:
    """The devices Keras would distribute over: the accelerators if any, else the CPU devices."""
    import keras

    return [str(name) for name in keras.distribution.list_devices()]


def resolve(requested: int | str) -> Devices:
    """Picks the devices of a request: the first ``requested`` ones Keras lists, or all of them.

    Raises:
        DevicesError: One line listing the devices found, for more devices than the machine has,
            or for more than one on a backend without data parallelism here.
    """
    import keras

    requested = check_request(requested)
    backend = keras.backend.backend()
    found = available()
    if requested == ALL:
        names = found
    elif requested > len(found):
        raise DevicesError(
            f"devices {requested}: asked for {requested} devices, but the {backend} backend finds {len(found)}: "
            f"{', '.join(found) or 'none'} (use --devices {len(found)} or --devices all)")
    else:
        names = found[:requested]
    if len(names) > 1 and backend not in PARALLEL_BACKENDS:
        raise DevicesError(f"devices {requested}: data-parallel training needs the JAX or TensorFlow backend "
                           f"(KERAS_BACKEND=jax or tensorflow), not {backend}; use --devices 1")
    num_processes, process_index = _processes(backend)
    if num_processes > 1 and len(names) != len(found):
        raise DevicesError(f"devices {requested}: on {num_processes} hosts (jax.distributed) every device takes "
                           f"part; use --devices all ({len(found)} devices)")
    return Devices(requested=requested, names=tuple(names), backend=backend, num_processes=num_processes,
                   process_index=process_index)


def _tf_device(name: str) -> str:
    """A Keras device name ("gpu:1") as TensorFlow writes it ("/device:GPU:1")."""
    kind, _, index = name.partition(":")
    return f"/device:{kind.upper()}:{index}"


@contextlib.contextmanager
def data_parallel(devices: Devices) -> Iterator[Any]:
    """Makes ``devices`` current for what is built, compiled, trained and evaluated inside.

    Yields:
        None for one device (nothing is set); else the JAX ``DataParallel`` distribution or the
        TensorFlow ``MirroredStrategy``, current until the block ends.
    """
    if not devices.parallel:
        yield None
        return
    if devices.backend == "jax":
        import keras

        # On several hosts each process reads its own part of every batch (pretrain draws its crops
        # per process), so Keras must not try to shard the input itself.
        distribution = keras.distribution.DataParallel(devices=list(devices.names),
                                                       auto_shard_dataset=devices.num_processes == 1)
        with distribution.scope():
            yield distribution
        return
    if devices.backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(devices=[_tf_device(name) for name in devices.names])
        with strategy.scope():
            yield strategy
        return
    raise DevicesError(f"data-parallel training needs the JAX or TensorFlow backend, not {devices.backend}")
