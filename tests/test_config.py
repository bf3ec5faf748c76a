"""Config resolution: presets, files, options and --set, type-checked."""

from __future__ import annotations

import dataclasses
import json

import pytest

from msagg.pipeline.config import ConfigError, parse_value, resolve


@dataclasses.dataclass(frozen=True, kw_only=True)
class Toy:
    name: str = "a"
    count: int = 1
    rate: float = 0.5
    flag: bool = False
    maybe: int | None = None
    scales: tuple[str, ...] = ("3^9",)

    def __post_init__(self):
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")


PRESETS = {"small": {"count": 2, "scales": ["3^8"]}}


def test_layers_later_wins(tmp_path):
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"count": 3, "rate": 1}))
    cfg = resolve(Toy, presets=PRESETS, preset="small", config_file=cfg_file,
                  options={"name": "b", "flag": None}, sets=["count=7", "scales=3^8,3^9", "maybe=none"])
    assert cfg == Toy(name="b", count=7, rate=1.0, flag=False, maybe=None, scales=("3^8", "3^9"))


def test_toml_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('count = 4\nscales = ["2^13"]\n')
    assert resolve(Toy, config_file=f) == Toy(count=4, scales=("2^13",))


@pytest.mark.parametrize(
    "text,tp,expected",
    [("3", int, 3), ("0.25", float, 0.25), ("yes", bool, True), ("off", bool, False),
     ("none", int | None, None), ("5", int | None, 5), ("", tuple[str, ...], ()), ("1,2", tuple[int, ...], (1, 2)),
     # A union takes the first member type that parses (pretrain's devices: a count or "all").
     ("2", int | str, 2), ("all", int | str, "all")],
)
def test_parse_value(text, tp, expected):
    assert parse_value("k", text, tp) == expected


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="count='x': expected int"):
        resolve(Toy, sets=["count=x"])
    with pytest.raises(ConfigError, match="--set nope: unknown key"):
        resolve(Toy, sets=["nope=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        resolve(Toy, sets=["count"])
    with pytest.raises(ConfigError, match="unknown preset 'big'"):
        resolve(Toy, presets=PRESETS, preset="big")
    with pytest.raises(ConfigError, match="count must be >= 0"):
        resolve(Toy, sets=["count=-1"])
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        resolve(Toy, config_file=bad)
    with pytest.raises(ConfigError, match="missing.json: cannot read"):
        resolve(Toy, config_file=tmp_path / "missing.json")
    f = tmp_path / "typed.json"
    f.write_text(json.dumps({"flag": "yes"}))
    with pytest.raises(ConfigError, match="flag: expected bool"):
        resolve(Toy, config_file=f)
