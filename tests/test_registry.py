"""The one registry idiom (archs/registry.py) and its four users: a taken name is refused,
an unknown name is one line naming the known ones, a registered thing's config section
becomes part of its host config and is checked where it is registered, unregistering
takes the section away again."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError
from tokenizers import Tokenizer

from glassbox.archs.config import MoEConfig, model_config_from_dict
from glassbox.archs.errors import ConfigError
from glassbox.archs.ffn import FFN_KINDS, register_ffn
from glassbox.archs.registry import Registry, UnknownName
from glassbox.archs.routing import ROUTERS, SoftmaxRouter, register_router
from glassbox.metrics import INTERPRETABILITY, METRICS, Metric, register_metric
from glassbox.report import Report
from glassbox.training.data import DataConfig, data_config_from_dict
from glassbox.training.data.skills import SKILLS, Skill, register_skill
from glassbox.training.data.vocab import tag_token

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------- the generic registry
@dataclass
class Host:
    a: int = 1  # the host's own key
    z: str = "last"  # a key the sections go before


@dataclass
class Knobs:
    size: int = 0
    rate: float = 0.0


@dataclass
class Clash:
    a: int = 0  # the host's own key


@pytest.fixture
def nested() -> Registry:
    reg: Registry = Registry("widget")
    reg.hold_sections(Host, before="z")
    yield reg
    for name in list(reg):
        reg.unregister(name)


def test_register_lookup_and_order(nested):
    nested.register("b", "B")
    nested.register("a_thing", "A")
    assert nested.names() == ("b", "a_thing") and list(nested) == ["b", "a_thing"]
    assert nested["a_thing"] == "A" and "b" in nested and len(nested) == 2
    assert dict(nested.items()) == {"b": "B", "a_thing": "A"}


def test_a_taken_name_is_refused_and_the_first_stays(nested):
    nested.register("w", "first")
    with pytest.raises(ValueError, match=r"^widget 'w' is taken by 'first'$"):
        nested.register("w", "second")
    assert nested["w"] == "first"
    nested.register("w", "first")  # the same thing again (its module re-run): kept


def test_an_unknown_name_is_one_line_naming_the_known_ones(nested):
    nested.register("gear", "G")
    nested.register("cog", "C")
    with pytest.raises(UnknownName) as e:
        nested["sprocket"]
    assert str(e.value) == "unknown widget 'sprocket': one of gear, cog"
    with pytest.raises(KeyError):  # still a KeyError for code that catches one
        nested["sprocket"]


def test_a_section_becomes_a_nested_field_and_goes_away(nested):
    nested.register("knobs", "K", config=Knobs)
    assert [f.name for f in dataclasses.fields(Host)] == ["a", "knobs", "z"]
    assert Host(knobs=Knobs(size=3)).knobs.size == 3 and Host().knobs == Knobs()
    loaded = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(Host), {"knobs": {"size": 2}})
    )
    assert loaded == Host(knobs=Knobs(size=2))
    with pytest.raises(ConfigKeyError, match="sise"):
        OmegaConf.merge(OmegaConf.structured(Host), {"knobs": {"sise": 2}})
    assert nested.section("knobs") is Knobs
    nested.unregister("knobs")
    assert [f.name for f in dataclasses.fields(Host)] == ["a", "z"]
    with pytest.raises(TypeError):
        Host(knobs=Knobs())


def test_a_section_is_checked_where_it_is_registered(nested):
    with pytest.raises(ValueError, match=r"'a': Host has a key 'a' of its own already"):
        nested.register("a", "A", config=Knobs)
    with pytest.raises(TypeError, match="must be a dataclass"):
        nested.register("k", "K", config=dict)
    with pytest.raises(ValueError, match="identifier"):
        nested.register("two words", "K", config=Knobs)
    assert "a" not in nested and "k" not in nested  # nothing half-registered
    assert [f.name for f in dataclasses.fields(Host)] == ["a", "z"]


def test_flat_sections_share_the_host_and_collide_by_key():
    @dataclass
    class FlatHost:
        a: int = 1

    def off_by_default(name: str, thing: Any, config: type | None) -> None:
        for f in dataclasses.fields(config) if config is not None else ():
            if f.default:
                raise ValueError(f"{name}.{f.name} must default to 0")

    reg: Registry = Registry("gadget", check=off_by_default)
    reg.hold_sections(FlatHost, flat=True)
    reg.register("knobs", "K", config=Knobs)
    assert [f.name for f in dataclasses.fields(FlatHost)] == ["a", "size", "rate"]
    assert FlatHost(size=4).size == 4
    with pytest.raises(ValueError, match=r"FlatHost\.size is 'knobs''s already"):
        reg.register("other", "O", config=Knobs)
    with pytest.raises(ValueError, match=r"FlatHost has a key 'a'"):
        reg.register("clash", "C", config=Clash)

    @dataclass
    class On:
        level: int = 3

    with pytest.raises(ValueError, match="on.level must default to 0"):
        reg.register("on", "O", config=On)
    reg.unregister("knobs")
    assert [f.name for f in dataclasses.fields(FlatHost)] == ["a"]


# ----------------------------------------------------------------------------- skills
def test_skill_ids_are_the_shipped_tokenizers_tag_order():
    """Registration order is the skill id: it must be the order the shipped checkpoints'
    task tags were made in."""
    vocab = Tokenizer.from_file(str(ROOT / "checkpoints/dense/tokenizer.json")).get_vocab()
    tags = sorted((i, w) for w, i in vocab.items() if w.startswith("<tag:"))
    assert [w for _, w in tags][: len(SKILLS)] == [tag_token(s) for s in SKILLS]


@dataclass
class JuggleConfig:
    balls: int = 3  # balls in the air


class JuggleSkill(Skill):
    features = ()

    @classmethod
    def check_config(cls, section: Any, prefix: str) -> None:
        if section.balls < 1:
            raise ConfigError(f"{prefix}.balls", section.balls, "must be >= 1")

    def words(self) -> list[str]:
        return ["ball"]

    def sample(self, rng, split):  # never drawn here
        raise NotImplementedError


@pytest.fixture
def juggle():
    register_skill("juggle", config=JuggleConfig)(JuggleSkill)
    yield
    SKILLS.unregister("juggle")


def test_a_skill_brings_its_data_section_and_checks_it(juggle):
    assert SKILLS.names()[-1] == "juggle" and JuggleSkill.config_key == "juggle"
    names = [f.name for f in dataclasses.fields(DataConfig)]
    assert names[names.index("text") - 1] == "juggle"  # the skills' sections, before text
    assert data_config_from_dict({"juggle": {"balls": 5}}).juggle == JuggleConfig(balls=5)
    with pytest.raises(ConfigError, match=r"^config error: data\.juggle\.balls=0: must be >= 1$"):
        data_config_from_dict({"juggle": {"balls": 0}})
    with pytest.raises(ConfigKeyError, match="bals"):
        data_config_from_dict({"juggle": {"bals": 2}})


def test_a_skill_without_a_section_must_read_a_registered_one():
    class Borrower(JuggleSkill):
        config_key = "nowhere"

    with pytest.raises(ValueError, match=r"config_key \('nowhere'\) must name .*: one of copy"):
        register_skill("borrower")(Borrower)
    assert "borrower" not in SKILLS
    with pytest.raises(ValueError, match="'copy' is taken"):
        register_skill("copy", config=JuggleConfig)(JuggleSkill)
    assert "juggle" not in SKILLS and not hasattr(DataConfig(), "juggle")


# ---------------------------------------------------------------------------- metrics
def test_a_registered_metric_is_a_column_of_its_table_until_unregistered(tmp_path):
    new = Metric("interp.juggling", "juggling", "balls kept up", section=INTERPRETABILITY)
    assert register_metric(new) is new
    try:
        assert METRICS.names()[-1] == "interpretability:interp.juggling"
        report = Report(out_dir=tmp_path, seeds=(0,), config={}, runs=())
        assert report.metrics[-1] is new and len(report.metrics) == len(METRICS)
    finally:
        METRICS.unregister(new.name)
    assert Report(out_dir=tmp_path, seeds=(0,), config={}, runs=()).metrics[-1] is not new


def test_a_metric_is_checked_where_it_is_registered():
    with pytest.raises(ValueError, match="'capability:val_loss' is taken"):
        register_metric(Metric("val_loss", "loss again"))
    with pytest.raises(ValueError, match=r"section 'tables' is not one of capability, "):
        register_metric(Metric("interp.x", "x", section="tables"))
    with pytest.raises(ValueError, match="at most one named placeholder"):
        register_metric(Metric("skills.{skill}.{task}", "{skill}"))
    with pytest.raises(ValueError, match="placeholder the key lacks"):
        register_metric(Metric("interp.x", "{skill} x"))
    assert (
        "capability:interp.x" not in METRICS and "capability:skills.{skill}.{task}" not in METRICS
    )
    # the same key in two tables is two entries (the post-hoc route repeats a few scores)
    assert {"interpretability:interp.lift_pooled", "posthoc:interp.lift_pooled"} <= set(METRICS)


# ------------------------------------------------------------------ FFN kinds, routers
def test_an_unknown_kind_or_router_is_one_line_naming_the_known_ones():
    with pytest.raises(
        UnknownName, match=r"^unknown FFN kind 'mlp': one of dense, moe, transcoder"
    ):
        FFN_KINDS["mlp"]
    with pytest.raises(
        UnknownName, match=r"^unknown MoE router 'top1': one of softmax, relu, pooled"
    ):
        ROUTERS["top1"]


def test_a_kind_named_like_an_ffn_key_is_refused():
    with pytest.raises(ValueError, match="'d_ff' is a key of FFNConfig already"):
        register_ffn("d_ff")(FFN_KINDS["dense"])
    assert "d_ff" not in FFN_KINDS


@dataclass
class NoisyKeys:
    noise_std: float = 0.0  # std of the noise added to the router logits in training


class NoisyRouter(SoftmaxRouter):
    @classmethod
    def check_config(cls, cfg: Any, prefix: str) -> None:
        if cfg.noise_std < 0:
            raise ConfigError(f"{prefix}.noise_std", cfg.noise_std, "must be >= 0")


def _moe(**keys: Any) -> dict:
    moe = {"n_experts": 4, "k": 2, "d_expert": 8, **keys}
    return {"vocab_size": 16, "d_model": 16, "n_heads": 2, "ffn": {"kind": "moe", "moe": moe}}


@pytest.fixture
def noisy():
    register_router("noisy", config=NoisyKeys)(NoisyRouter)
    yield
    ROUTERS.unregister("noisy")


def test_a_router_brings_its_keys_to_moe_config_and_checks_them(noisy):
    names = [f.name for f in dataclasses.fields(MoEConfig)]
    assert names[-1] == "noise_std" and NoisyRouter.own_keys == ("noise_std",)
    cfg = model_config_from_dict(_moe(router="noisy", noise_std=0.5))
    assert cfg.ffn.moe.noise_std == 0.5
    with pytest.raises(ConfigError, match=r"^config error: model\.ffn\.moe\.noise_std=-1\.0: must"):
        model_config_from_dict(_moe(router="noisy", noise_std=-1.0))
    with pytest.raises(
        ConfigError, match=r"noise_std=0\.5: only applies to moe\.router=noisy; set 0$"
    ):
        model_config_from_dict(_moe(router="softmax", noise_std=0.5))


def test_router_keys_are_checked_where_the_router_is_registered():
    @dataclass
    class Clashing:
        pool_size: int = 0  # the pooled router's key

    @dataclass
    class Own:
        k: int = 0  # MoEConfig's own key

    @dataclass
    class On:
        noise_std: float = 1.0  # on by default: would mean something with every router

    with pytest.raises(ValueError, match=r"MoEConfig\.pool_size is 'pooled''s already"):
        register_router("clash", config=Clashing)(NoisyRouter)
    with pytest.raises(ValueError, match=r"MoEConfig has a key 'k' of its own"):
        register_router("own", config=Own)(NoisyRouter)
    with pytest.raises(ValueError, match="'noise_std' must default to off"):
        register_router("on", config=On)(NoisyRouter)
    assert ROUTERS.names() == ("softmax", "relu", "pooled")
    assert "noise_std" not in [f.name for f in dataclasses.fields(MoEConfig)]


def test_the_shipped_pooled_checkpoint_reads_its_router_keys():
    d = OmegaConf.to_container(OmegaConf.load(ROOT / "checkpoints/moe_pooled/config.yaml"))
    moe = model_config_from_dict(d["model"]).ffn.moe
    assert moe.router == "pooled" and moe == MoEConfig(**d["model"]["ffn"]["moe"])
