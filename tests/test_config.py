"""Configs: string overrides parse to each field's type; JSON round trips rebuild the dataclass."""

from __future__ import annotations

import dataclasses
import json

import pytest

from aezoo.core import config_from_dict, config_to_dict, config_with
from aezoo.inference import ENGINES
from aezoo.models import MODELS


def test_config_with_parses_each_field_type():
    vae = MODELS["vae"].Config()
    cfg = config_with(vae, {"z_dim": "3", "hidden_dims": "4, 5", "activation": "relu"})
    assert (cfg.z_dim, cfg.hidden_dims, cfg.activation) == (3, (4, 5), "relu")
    assert type(cfg.z_dim) is int and vae.z_dim != 3, "a copy, the original unchanged"

    svi = ENGINES["svi"]()
    eng = config_with(svi, {"lr": "1e-2", "epochs": "7", "progress": "false", "analytic_kl": "0"})
    assert (eng.lr, eng.epochs, eng.progress, eng.analytic_kl) == (0.01, 7, False, False)
    assert type(eng.lr) is float and type(eng.epochs) is int and type(eng.progress) is bool
    assert config_with(eng, {"progress": "True"}).progress is True

    lg = MODELS["linear_gaussian"].Config()
    assert lg.sigma is None and config_with(lg, {"sigma": "0.5"}).sigma == 0.5  # field with a None default


def test_config_with_resets_an_optional_field_to_none():
    cfg = dataclasses.replace(MODELS["linear_gaussian"].Config(), sigma=0.5)
    assert config_with(cfg, {"sigma": "none"}).sigma is None


@pytest.mark.parametrize("key, text", [("z_dim", "2.5"), ("hidden_dims", "a,b")])
def test_config_with_rejects_unparsable_values(key, text):
    with pytest.raises(ValueError, match=f"model.{key}"):
        config_with(MODELS["vae"].Config(), {key: text}, prefix="model.")


def test_config_with_rejects_bad_bools():
    with pytest.raises(ValueError, match="progress"):
        config_with(ENGINES["svi"](), {"progress": "maybe"})


def test_config_with_lists_valid_keys_for_an_unknown_one():
    cfg = MODELS["vae"].Config()
    with pytest.raises(ValueError, match="zdim") as err:
        config_with(cfg, {"zdim": "3"}, prefix="model.")
    for field in dataclasses.fields(cfg):
        assert f"model.{field.name}" in str(err.value)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_default_config_round_trips_through_json(name):
    cfg = MODELS[name].Config()
    text = json.dumps(config_to_dict(cfg))
    assert config_from_dict(type(cfg), json.loads(text)) == cfg


def test_config_from_dict_rejects_unknown_keys():
    cls = MODELS["vae"].Config
    with pytest.raises(ValueError, match="valid keys") as err:
        config_from_dict(cls, {"z_dim": 3, "depth": 2})
    assert "depth" in str(err.value) and "z_dim" in str(err.value)
