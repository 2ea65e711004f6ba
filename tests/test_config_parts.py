"""A config part may start from other parts of its group (`defaults: [base]`): every
configs/model/*.yaml starts from configs/model/base.yaml, and the run configs still
resolve to the model each shipped checkpoint was trained as."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from glassbox.archs.config import ConfigError, model_config_from_dict
from glassbox.training.config import load_config, to_dict

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.parent.name for p in (ROOT / "checkpoints").glob("*/config.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_a_run_config_resolves_to_its_shipped_checkpoints_model(name):
    """configs/<name>.yaml's model section (base.yaml and the kind's part) is the
    shipped checkpoint's, but for what training fills in (vocab_size, name)."""
    saved = OmegaConf.to_container(OmegaConf.load(ROOT / "checkpoints" / name / "config.yaml"))
    shipped = to_dict(model_config_from_dict(saved["model"]))
    resolved = to_dict(load_config(ROOT / "configs" / f"{name}.yaml").model)
    for key in ("vocab_size", "name"):
        shipped.pop(key), resolved.pop(key)
    assert resolved == shipped


@pytest.mark.parametrize(
    "part", sorted(p.stem for p in (ROOT / "configs/model").glob("*.yaml") if p.stem != "base")
)
def test_every_model_part_starts_from_the_backbone(part, tmp_path):
    """Each backbone key is base.yaml's unless the part sets its own."""
    own = OmegaConf.load(ROOT / "configs/model" / f"{part}.yaml")
    assert list(own.defaults) == ["base"]
    run = _write(tmp_path / "run.yaml", f"defaults:\n  - model: {part}\n")
    model = load_config(run).model
    for key, value in OmegaConf.load(ROOT / "configs/model/base.yaml").items():
        assert getattr(model, key) == own.get(key, value), key


@pytest.fixture
def parts(tmp_path: Path) -> Path:
    (tmp_path / "model").mkdir()
    return tmp_path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_part_on_a_part_on_a_part_and_its_errors(parts):
    _write(parts / "model/a.yaml", "d_model: 64\nn_heads: 2\n")
    _write(parts / "model/b.yaml", "defaults: [a]\nn_layers: 3\n")
    _write(parts / "model/c.yaml", "defaults: [b, base]\nn_layers: 1\n")  # base: the package's
    run = _write(parts / "run.yaml", "defaults:\n  - model: c\n")
    m = load_config(run).model
    assert (m.d_model, m.n_heads, m.n_layers) == (128, 4, 1)  # base after b: later wins
    _write(parts / "model/c.yaml", "defaults: [base, b]\n")
    m = load_config(run).model
    assert (m.d_model, m.n_heads, m.n_layers) == (64, 2, 3)
    _write(parts / "model/a.yaml", "defaults: [c]\n")
    with pytest.raises(ConfigError, match=r"a part that includes itself: c -> b -> a -> c$"):
        load_config(run)
    _write(parts / "model/c.yaml", "defaults: [nowhere]\n")
    with pytest.raises(ConfigError, match=r"defaults\.model='nowhere': one of base, dense"):
        load_config(run)
    _write(parts / "model/c.yaml", "defaults: [{model: base}]\n")
    with pytest.raises(ConfigError, match=r"a part's defaults are names of parts of its group"):
        load_config(run)
