"""Data-parallel pretraining (--devices): the batch rule, one device as before, the device-count error, JAX
DataParallel against one device, TensorFlow MirroredStrategy."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from msagg.data.errors import ConfigError
from msagg.stages.training import devices as devices_lib
from msagg.stages import extract, pretrain
from msagg.stages.runs.folder import config_hash
from test_pretrain import read_history, tiny_config, write_tiny_cache

ROOT = Path(__file__).resolve().parent.parent

LOSS_RTOL = 1e-4
"""How closely a JAX run on 2 devices follows the same run on 1 (per-epoch train and validation loss).

``keras.distribution.DataParallel`` runs the one-device computation sharded along the batch: the
loss, the gradients and the batch-norm statistics are still taken over the whole global batch and
the dropout masks do not depend on the sharding, so the only difference is the order of float32
sums (each device's partial sum, then their all-reduce). Measured: at most 7e-7 relative over the
12 SGD steps here, a few float32 epsilons (1.2e-7). 1e-4 leaves more than 100 times that for other
CPUs and XLA versions, while a real data-parallel fault fails it by far: a gradient off by 2x (the
loss summed, not averaged, over the devices) changes the first epoch's loss by 3e-2, per-device
batch-norm statistics or a dropped half batch by more, and even a 1% change of the learning rate
moves it by 1.2e-4 (and the later epochs by 5e-2)."""


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return write_tiny_cache(tmp_path_factory.mktemp("parallel") / "toy-tags")


def run_python(code: str, env: dict[str, str], timeout: int = 300) -> dict:
    """Runs ``code`` in a fresh interpreter (repo root and tests/ importable); returns the JSON its last line prints."""
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": path, **env}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT, env=full_env)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


# --- the request and the batch rule ------------------------------------------------------------------


def test_devices_request_is_a_count_or_all():
    assert devices_lib.check_request(1) == 1 and devices_lib.check_request("2") == 2
    assert devices_lib.check_request(" All ") == "all"
    for bad in (0, -1, "two", 1.5, True, None, ""):
        with pytest.raises(ConfigError, match=r"devices must be a device count >= 1 or 'all', got"):
            devices_lib.check_request(bad)
    assert pretrain.Config(cache="x", devices="3", batch_size=24).devices == 3


def test_batch_size_is_the_global_batch_and_must_split_evenly():
    # The paper's 23 does not split over 2 devices: refused with the nearest values that do.
    with pytest.raises(ConfigError, match=r"batch_size 23 does not split evenly over 2 devices .* "
                                          r"use --set batch_size=22 or 24"):
        pretrain.Config(cache="x", devices=2)
    with pytest.raises(ConfigError, match=r"batch_size 2 does not split evenly over 4 devices .* batch_size=4,"):
        pretrain.Config(cache="x", devices=4, batch_size=2)
    assert pretrain.Config(cache="x", devices=2, batch_size=24).batch_size == 24  # unchanged: global, not per device
    assert pretrain.Config(cache="x", devices="all").devices == "all"  # checked once the devices are known
    devices_lib.check_batch(23, 1)
    two = devices_lib.Devices(requested=2, names=("cpu:0", "cpu:1"), backend="jax")
    assert (two.count, two.parallel, two.batch_multiple(32), two.batch_multiple(33)) == (2, True, 32, 34)


def test_default_devices_and_precision_keep_the_hash_of_earlier_runs():
    # Golden hashes of configs written before devices and precision existed: their run folders still resume.
    assert config_hash(pretrain.Config(cache="runs/x")) == "bc82da44c99c"
    assert config_hash(pretrain.Config(cache="runs/x", **pretrain.PRESETS["tiny"])) == "2e3a0dde63ad"
    # (extract's segments: "drop" then, "cover" now, so a new default run is another run; and its reference
    # sets: MFCC then, MFCC and the teacher's now where musicnn is installed.)
    assert config_hash(extract.Config(pretrain="runs/p", cache="runs/c", segments="drop",
                                      classic=("mfcc",))) == "fd08012143f8"
    assert config_hash(extract.Config(pretrain="runs/p", cache="runs/c")) != "fd08012143f8"
    assert config_hash(pretrain.Config(cache="runs/x", devices=1, precision="float32")) == "bc82da44c99c"
    # Another device count or precision is another run (a resumed run repeats the interrupted one bit for bit
    # only on the same devices).
    hashes = {config_hash(pretrain.Config(cache="runs/x", batch_size=24, devices=d)) for d in (1, 2, "all")}
    assert len(hashes) == 3
    assert config_hash(pretrain.Config(cache="runs/x", precision="bf16")) != "bc82da44c99c"


@pytest.mark.parametrize(
    "args, expected",
    [([], (1, "float32")), (["--devices", "1"], (1, "float32")), (["--devices", "all"], ("all", "float32")),
     (["--devices", "2", "--set", "batch_size=4"], (2, "float32")), (["--precision", "bf16"], (1, "bf16")),
     (["--set", "devices=2", "--set", "batch_size=4"], (2, "float32"))],
)
def test_cli_devices_and_precision_options(monkeypatch, tmp_path, args, expected):
    from click.testing import CliRunner

    from msagg.pipeline.cli import main

    configs = []
    monkeypatch.setattr(pretrain, "run", lambda config, out, **kwargs: configs.append(config) or out)
    result = CliRunner().invoke(main, ["pretrain", "--cache", str(tmp_path), "--preset", "tiny", "--out",
                                       str(tmp_path / "out"), *args])
    assert result.exit_code == 0, result.output
    assert (configs[0].devices, configs[0].precision) == expected
    if expected == (1, "float32"):  # --devices 1 is today's run: the same config, the same hash
        assert configs[0] == pretrain.Config(cache=str(tmp_path), **pretrain.PRESETS["tiny"])


def test_cli_help_explains_devices_and_the_batch_rule():
    from click.testing import CliRunner

    from msagg.pipeline.cli import main

    text = " ".join(CliRunner().invoke(main, ["pretrain", "--help"]).output.split())
    assert "--devices N|all" in text and "global batch" in text and "learning rate is unchanged" in text
    assert "--precision [float32|bf16]" in text


# --- TensorFlow (this process's backend) -------------------------------------------------------------


def test_one_device_trains_as_before_without_a_distribution(cache, tmp_path):
    import keras

    seen = []

    def check(scale, row):
        import tensorflow as tf

        seen.append((keras.distribution.distribution(), tf.distribute.has_strategy()))

    out = pretrain.run(tiny_config(cache, scales=("3^2",), devices=1), tmp_path / "p", progress=False,
                       tensorboard=False, on_epoch_end=check)
    assert seen and all(s == (None, False) for s in seen)  # no distribution, no strategy: the code path of before
    assert "devices" not in json.loads((out / "config.json").read_text())
    recorded = json.loads((out / "3^2" / "metrics.json").read_text())["devices"]
    assert recorded == {"requested": 1, "count": 1, "names": [devices_lib.available()[0]], "backend": "tensorflow"}
    assert json.loads((out / "metadata.json").read_text())["runtime"]["devices"] == recorded


def test_more_devices_than_the_machine_has_is_one_clear_error(cache, tmp_path):
    from click.testing import CliRunner

    from msagg.pipeline.cli import main

    found = devices_lib.available()
    n = len(found) + 1
    out = tmp_path / "p"
    result = CliRunner().invoke(main, ["pretrain", "--cache", str(cache), "--preset", "tiny", "--devices", str(n),
                                       "--set", f"batch_size={2 * n}", "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: devices {n}: asked for {n} devices, but the tensorflow backend finds "
                                     f"{len(found)}: {', '.join(found)} (use --devices {len(found)} or --devices all)")
    assert not out.exists()  # refused before the run folder was made
    with pytest.raises(devices_lib.DevicesError):  # a ConfigError: the CLI prints it as one line
        devices_lib.resolve(n)


def test_tensorflow_mirrored_strategy_on_two_logical_cpus(cache, tmp_path):
    """Two logical CPU devices (set before TensorFlow starts) stand in for two GPUs."""
    result = run_python(f"""
        import json
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from msagg.stages import pretrain
        from msagg.stages.runs.pretrain_run import load_model
        from test_pretrain import read_history, tiny_config

        during = []
        out = pretrain.run(tiny_config({str(cache)!r}, scales=("3^2",), devices=2), {str(tmp_path / "p")!r},
                           progress=False, tensorboard=False,
                           on_epoch_end=lambda scale, row: during.append(tf.distribute.has_strategy()))
        model = load_model(out / "3^2" / "model.keras")
        probs = model.predict_on_batch(tf.zeros((3, 27))).tolist()
        print(json.dumps({{"during": during, "after": tf.distribute.has_strategy(), "probs": probs,
                          "history": read_history(out / "3^2" / "history.csv"),
                          "metrics": json.loads((out / "3^2" / "metrics.json").read_text()),
                          "config": json.loads((out / "config.json").read_text())}}))
    """, {"KERAS_BACKEND": "tensorflow"})
    assert result["during"] == [True, True] and result["after"] is False  # the strategy's scope ended with the run
    assert result["metrics"]["devices"] == {"requested": 2, "count": 2, "names": ["cpu:0", "cpu:1"],
                                            "backend": "tensorflow"}
    assert result["config"]["devices"] == 2
    assert all(float(r["loss"]) > 0 and float(r["val_loss"]) > 0 for r in result["history"])
    assert len(result["probs"]) == 3 and all(0 < p < 1 for row in result["probs"] for p in row)


# --- JAX -------------------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install -e .[test])")
def test_jax_data_parallel_follows_one_device(cache, tmp_path):
    """The same run on one and on two (XLA host) devices, same global batch: the loss curves agree within LOSS_RTOL."""
    result = run_python(f"""
        import json

        import keras
        from msagg.stages.training import devices
        from msagg.stages import pretrain
        from test_pretrain import read_history, tiny_config

        runs = {{}}
        for n in (1, 2):
            # 4 epochs of 3 steps of 4 crops (2 per device), two lr stages, dropout on.
            config = tiny_config({str(cache)!r}, scales=("3^2",), devices=n, num_lr_stages=2,
                                 max_epochs_per_stage=2, patience=5)
            out = pretrain.run(config, {str(tmp_path)!r} + f"/d{{n}}", progress=False, tensorboard=False)
            runs[n] = {{"history": read_history(out / "3^2" / "history.csv"),
                       "metrics": json.loads((out / "3^2" / "metrics.json").read_text()),
                       "after": repr(keras.distribution.distribution())}}
        try:
            pretrain.run(tiny_config({str(cache)!r}, scales=("3^2",), devices=4), {str(tmp_path)!r} + "/d4",
                         progress=False)
        except devices.DevicesError as err:
            runs["error"] = str(err)
        print(json.dumps({{"backend": keras.backend.backend(), "found": devices.available(), **runs}}))
    """, {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert result["backend"] == "jax" and result["found"] == ["cpu:0", "cpu:1"]
    one, two = result["1"], result["2"]
    assert one["metrics"]["devices"]["count"] == 1
    assert two["metrics"]["devices"] == {"requested": 2, "count": 2, "names": ["cpu:0", "cpu:1"], "backend": "jax"}
    assert one["after"] == two["after"] == "None"  # the distribution's scope ended with the run: nothing leaks
    assert len(one["history"]) == len(two["history"]) == 4
    for a, b in zip(one["history"], two["history"]):
        for key in ("loss", "val_loss"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=LOSS_RTOL), (a["epoch"], key)
        assert a["lr"] == b["lr"]
    assert two["metrics"]["best_epoch"] == one["metrics"]["best_epoch"]
    assert result["error"] == ("devices 4: asked for 4 devices, but the jax backend finds 2: cpu:0, cpu:1 "
                               "(use --devices 2 or --devices all)")
