"""Shared test setup: quiet TensorFlow, CPU only, fixed seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    yield


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster of 2 CPUs for every test that needs one (Ray takes seconds to start).

    Yields:
        The ``ray`` module, initialized; shut down when the session ends.
    """
    import logging

    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory):
    """A pretrain run trained for real on the tiny preset (``tests/tiny_family.py``), shared by the
    tests of the Python API, ``msagg embed`` and ``msagg predict``.

    Returns:
        The run folder (scales 3^2 and 4^2 at ``tiny_family.SAMPLE_RATE`` Hz).
    """
    import tiny_family as tiny

    return tiny.train(tmp_path_factory.mktemp("tiny-family"))
