"""DataConfig: the YAML files load into the schema, impossible values are one-line
errors naming the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from glassbox.archs.config import ConfigError
from glassbox.training.data import DataConfig, data_config_from_dict, validate_data_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data"


def test_skills_yaml_is_the_default():
    assert data_config_from_dict(OmegaConf.load(CONFIGS / "skills.yaml")) == DataConfig()


def test_a_typo_is_an_error_naming_the_key():
    with pytest.raises(ConfigKeyError, match="max_digit"):
        data_config_from_dict({"addition": {"max_digit": 4}})


def test_mix_merges_key_by_key():
    cfg = data_config_from_dict({"mix": {"copy": 0}})
    assert cfg.mix["copy"] == 0 and cfg.mix["addition"] == 1


@pytest.mark.parametrize(
    "override, key",
    [
        ({"source": "web"}, "data.source"),
        ({"loss_on": "some"}, "data.loss_on"),
        ({"mix": {"juggling": 1.0}}, "data.mix.juggling"),
        ({"mix": {"copy": -1.0}}, "data.mix.copy"),
        ({"mix": {s: 0.0 for s in DataConfig().mix}}, "data.mix"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"n_train": 0}, "data.n_train"),
        ({"n_val": -1}, "data.n_val"),
        ({"copy": {"ood_max_len": 8}}, "data.copy.ood_max_len"),
        ({"sort": {"min_len": 9}}, "data.sort.min_len"),
        ({"reverse": {"n_values": 10}}, "data.reverse.n_values"),
        ({"modadd": {"p": 1}}, "data.modadd.p"),
        ({"modadd": {"train_fraction": 1.0}}, "data.modadd.train_fraction"),
        ({"addition": {"ood_max_digits": 3}}, "data.addition.ood_max_digits"),
        ({"addition": {"min_digits": 4}}, "data.addition.min_digits"),
        ({"dyck": {"n_types": 5}}, "data.dyck.n_types"),
        ({"dyck": {"ood_max_depth": 4}}, "data.dyck.ood_max_depth"),
        ({"dyck": {"ood_max_len": 4}}, "data.dyck.ood_max_len"),
        ({"dyck": {"p_open": 1.0}}, "data.dyck.p_open"),
        ({"facts": {"relations": ["mayor"]}}, "data.facts.relations"),
        ({"facts": {"relations": []}}, "data.facts.relations"),
        ({"facts": {"holdout": "entities"}}, "data.facts.holdout"),
        ({"facts": {"phrasing_train_fraction": 0.99}}, "data.facts.phrasing_train_fraction"),
        ({"ioi": {"n_names": 1}}, "data.ioi.n_names"),
        ({"ioi": {"n_places": 9}}, "data.ioi.n_places"),
        ({"n_train": 500}, "data.n_train"),  # facts' share cannot teach every fact
        ({"source": "text"}, "data.text.paths"),
        ({"source": "text", "text": {"paths": ["x"], "vocab_size": 100}}, "data.text.vocab_size"),
        ({"source": "text", "text": {"paths": ["x"], "block_size": 1}}, "data.text.block_size"),
        ({"source": "text", "text": {"paths": ["x"], "sample_by": "word"}}, "data.text.sample_by"),
        ({"source": "text", "text": {"paths": ["x"], "val_size": 0}}, "data.text.val_size"),
        (
            {"source": "text", "text": {"paths": ["x"], "streaming": True, "val_size": 3}},
            "data.text.test_size",  # a fraction, but streaming counts documents
        ),
    ],
)
def test_impossible_values(override, key):
    with pytest.raises(ConfigError) as e:
        data_config_from_dict(override)
    assert e.value.key == key
    assert "\n" not in str(e.value) and key in str(e.value)


def test_prefix_names_the_section():
    cfg = DataConfig(loss_on="x")
    with pytest.raises(ConfigError, match="run.data.loss_on"):
        validate_data_config(cfg, prefix="run.data")
