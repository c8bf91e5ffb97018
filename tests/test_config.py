from dataclasses import dataclass
from typing import Literal

import pytest

from vlcore.core.config import build_config
from vlcore.core.errors import ConfigError


@dataclass(frozen=True)
class Cfg:
    steps: int = 8
    lr: float = 0.1
    flag: bool = True
    mode: Literal["a", "b"] = "a"
    path: str | None = None


def test_coerces_by_type():
    c = build_config(Cfg, {"steps": "12", "lr": "1e3", "flag": "False", "mode": "b", "path": "x"})
    assert c == Cfg(12, 1000.0, False, "b", "x")


def test_bool_false_string_is_false():
    # the public code's `type=bool` bug: "--flag False" meant True
    assert build_config(Cfg, {"flag": "false"}).flag is False
    assert build_config(Cfg, {"flag": "0"}).flag is False
    with pytest.raises(ConfigError, match="boolean"):
        build_config(Cfg, {"flag": "maybe"})


def test_unknown_key_suggests():
    with pytest.raises(ConfigError, match="Unknown option 'stpes'.*Did you mean 'steps'"):
        build_config(Cfg, {"stpes": 3})


def test_bad_values():
    with pytest.raises(ConfigError, match="integer"):
        build_config(Cfg, {"steps": "many"})
    with pytest.raises(ConfigError, match="not one of"):
        build_config(Cfg, {"mode": "c"})
    with pytest.raises(ConfigError, match="integer"):
        build_config(Cfg, {"steps": 1.5})


def test_dashes_and_none():
    assert build_config(Cfg, {"path": "none"}).path is None
    assert build_config(Cfg, {"steps": None}).steps == 8
