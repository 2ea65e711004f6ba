"""The FFN plug-in contract (archs/ffn.py): a new kind defined and registered here, and
nowhere else, builds from a config, trains, reports its units and active parameters
and round-trips through a checkpoint; aux losses only in training; hook pre-hooks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from omegaconf.errors import ConfigKeyError
from torch import Tensor, nn
from torch.utils.data import DataLoader

from glassbox import archs
from glassbox.analysis.interp import unit_activations
from glassbox.archs.config import (
    ConfigError,
    FFNConfig,
    ModelConfig,
    MoEConfig,
    TranscoderConfig,
    model_config_from_dict,
    validate_model_config,
)
from glassbox.archs.ffn import FFN, ffn_kinds, register_ffn, unregister_ffn
from glassbox.archs.hooks import HookPoint
from glassbox.archs.linearised import LinearFFN
from glassbox.archs.routing import ROUTERS, PooledRouter, ReLURouter, SoftmaxRouter
from glassbox.archs.units import HookUnits, UnitGroup
from glassbox.training.config import OptimConfig, to_dict
from glassbox.training.module import LMModule


# ------------------------------------------------------------- a toy kind: one class
@dataclass
class ToyConfig:
    width: int = 8  # hidden units
    l1_weight: float = 0.1  # weight of the L1 penalty on the hidden units


class ToyFFN(FFN):
    """ReLU MLP whose first half of hidden units a token is said not to use."""

    unit_name = "toy unit"
    unit_hooks = ("hook_hidden",)

    def __init__(self, d_model: int, cfg: FFNConfig):
        super().__init__()
        t = cfg.toy
        self.l1_weight = t.l1_weight
        self.W_in = nn.Linear(d_model, t.width, bias=False)
        self.W_out = nn.Linear(t.width, d_model, bias=False)
        self.hook_hidden = HookPoint()
        self.steps = 0

    @classmethod
    def check_config(cls, cfg: FFNConfig, prefix: str) -> None:
        if cfg.toy.width <= 0:
            raise ConfigError(f"{prefix}.toy.width", cfg.toy.width, "must be a positive integer")

    def forward(self, x: Tensor) -> Tensor:
        h = self.hook_hidden(F.relu(self.W_in(x)))
        self.aux_losses = {"toy_l1": (self.l1_weight, h.abs().mean())} if self.training else {}
        return self.W_out(h)

    def inactive_params(self) -> int:
        return self.W_in.weight.numel() // 2

    def after_optimizer_step(self) -> None:
        self.steps += 1

    def linearise(self, x: Tensor, acts=None) -> LinearFFN:
        """Its active units at each token, exactly: relu is the identity where a unit fires."""
        h = F.relu(self.W_in(x))
        token, unit = h.nonzero(as_tuple=True)
        return LinearFFN(
            token=token, unit=unit, act=h[token, unit], write=self.W_out.weight.T[unit],
            read=self.W_in.weight[unit], read_bias=h.new_zeros(unit.shape[0]),
            bias=x.new_zeros(x.shape),
        )  # fmt: skip

    def unit_groups(self, layer: int) -> list[UnitGroup]:
        """Its hidden units: each reads a W_in row and writes a W_out column."""
        return [
            HookUnits(
                name=f"blocks.{layer}.mlp.toy_units",
                layer=layer,
                kind=self.unit_name,
                n_units=self.W_in.out_features,
                params_per_unit=2 * self.W_in.in_features,
                hook=f"blocks.{layer}.mlp.hook_hidden",
                write=lambda: self.W_out.weight.T,
            )
        ]


@pytest.fixture
def toy():
    register_ffn("toy", config=ToyConfig)(ToyFFN)
    yield
    unregister_ffn("toy")


def toy_config(**toy) -> dict:
    return {
        "vocab_size": 16,
        "d_model": 16,
        "n_heads": 2,
        "n_layers": 2,
        "max_seq_len": 32,
        "ffn": {"kind": "toy", "toy": toy},
        "ffn_by_layer": {"1": {"kind": "dense", "d_ff": 24}},
    }


def test_toy_kind_builds_from_a_config_and_checks_its_own_section(toy):
    cfg = model_config_from_dict(toy_config(width=12))
    assert cfg.ffn.toy == ToyConfig(width=12)
    model = archs.Transformer(cfg)
    assert isinstance(model.blocks[0].mlp, ToyFFN) and model.blocks[0].mlp.W_in.out_features == 12
    assert "toy" in ffn_kinds()
    with pytest.raises(ConfigError, match=r"^config error: model\.ffn\.toy\.width=0: must be a"):
        model_config_from_dict(toy_config(width=0))
    with pytest.raises(ConfigKeyError, match="widht"):
        model_config_from_dict(toy_config(widht=3))
    with pytest.raises(ConfigError, match=r"model\.ffn\.kind='nope': one of .*transcoder, toy$"):
        validate_model_config(ModelConfig(vocab_size=8, ffn=FFNConfig(kind="nope")))


def test_unregistering_a_kind_removes_its_section():
    names = [f.name for f in dataclasses.fields(FFNConfig)]
    register_ffn("toy", config=ToyConfig)(ToyFFN)
    try:
        assert [f.name for f in dataclasses.fields(FFNConfig)] == names + ["toy"]
        assert FFNConfig(toy=ToyConfig(width=3)).toy.width == 3
    finally:
        unregister_ffn("toy")
    assert [f.name for f in dataclasses.fields(FFNConfig)] == names
    assert names[-2:] == ["moe", "transcoder"]  # the built-in sections, in their YAML order
    with pytest.raises(ValueError, match="taken"):
        register_ffn("moe")(ToyFFN)
    with pytest.raises(TypeError, match="FFN"):
        register_ffn("plain")(nn.Linear)


def test_toy_kind_reports_units_and_active_params(toy):
    torch.manual_seed(0)
    model = archs.Transformer(model_config_from_dict(toy_config(width=10))).eval()
    tokens = torch.randint(0, 16, (3, 7))
    units, col = unit_activations(model, [tokens])
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_hidden")
    torch.testing.assert_close(units[0], cache["blocks.0.mlp.hook_hidden"].reshape(21, 10))
    assert units[1].shape == (21, 24)  # the dense layer: its neurons
    assert (model.blocks[0].mlp.unit_name, model.blocks[1].mlp.unit_name) == ("toy unit", "neuron")
    assert model.num_params(active=True) == model.num_params() - 16 * 10 // 2


def test_toy_kind_trains_and_its_hook_runs_after_each_optimizer_step(toy):
    torch.manual_seed(0)
    module = LMModule(model=toy_config(), optim=to_dict(OptimConfig(warmup_steps=1)), max_steps=3)
    before = module.model.blocks[0].mlp.W_in.weight.detach().clone()
    tokens = torch.randint(1, 16, (12, 8))
    rows = [
        {"input_ids": t, "loss_mask": torch.ones_like(t), "attention_mask": torch.ones_like(t)}
        for t in tokens
    ]
    trainer = L.Trainer(
        max_steps=3,
        accumulate_grad_batches=2,  # 6 batches, 3 optimizer steps
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=DataLoader(rows, batch_size=2))
    toy_ffn = module.model.blocks[0].mlp
    assert toy_ffn.steps == 3
    assert not torch.equal(toy_ffn.W_in.weight, before)
    module.model.train()
    module.model(tokens)
    assert set(module.model.aux_losses()) == {"aux/toy_l1"}


def test_toy_kind_round_trips_through_a_checkpoint(toy, tmp_path):
    model = archs.Transformer(model_config_from_dict(toy_config(width=6))).eval()
    path = archs.save_pretrained(model, tmp_path / "ckpt")
    assert "toy:" in (path / "config.yaml").read_text()
    loaded = archs.load_pretrained(path)
    x = torch.randint(0, 16, (2, 5))
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


# ------------------------------------------------------- aux losses: training only
@pytest.mark.parametrize(
    "ffn",
    [
        FFNConfig(kind="moe", moe=MoEConfig(n_experts=4, k=2, d_expert=8)),
        FFNConfig(
            kind="moe",
            moe=MoEConfig(
                n_experts=4,
                k=2,
                d_expert=8,
                router="relu",
                expert_activation="relu",
                sparsity_weight=0.1,
            ),
        ),  # fmt: skip
        FFNConfig(
            kind="transcoder",
            transcoder=TranscoderConfig(d_latent=32, activation="jumprelu", l0_weight=1.0),
        ),
    ],
    ids=["moe", "moe-relu", "transcoder-jumprelu"],
)
def test_aux_losses_only_in_training_mode(ffn):
    model = archs.Transformer(ModelConfig(vocab_size=16, d_model=16, n_heads=2, ffn=ffn))
    x = torch.randint(0, 16, (2, 6))
    model.train()
    model(x)
    assert model.aux_losses()
    model.eval()
    with torch.no_grad():
        model(x)
    assert model.aux_losses() == {}
    assert all(b.mlp.aux_losses == {} for b in model.blocks)


# ------------------------------------------------------------------ routers
def test_routers_are_registered_by_name_and_named_in_config_errors():
    assert ROUTERS == {"softmax": SoftmaxRouter, "relu": ReLURouter, "pooled": PooledRouter}
    bad = FFNConfig(kind="moe", moe=MoEConfig(router="sigmoid"))
    with pytest.raises(
        ConfigError, match=r"model\.ffn\.moe\.router='sigmoid': one of softmax, relu, pooled$"
    ):
        validate_model_config(ModelConfig(vocab_size=8, ffn=bad))
    l1 = FFNConfig(kind="moe", moe=MoEConfig(sparsity_weight=0.1))
    with pytest.raises(ConfigError, match=r"only applies to moe\.router=relu; set 0$"):
        validate_model_config(ModelConfig(vocab_size=8, ffn=l1))


def test_router_choice_keeps_state_dict_names():
    soft = FFNConfig(kind="moe", moe=MoEConfig(n_experts=4, k=1, d_expert=8))
    relu = FFNConfig(kind="moe", moe=MoEConfig(n_experts=4, k=1, d_expert=8, router="relu"))
    pool = MoEConfig(n_experts=4, k=1, d_expert=8, router="pooled", pool_size=2)
    pooled = FFNConfig(kind="moe", moe=pool)
    names = [
        list(
            archs.Transformer(ModelConfig(vocab_size=8, d_model=16, n_heads=2, ffn=f)).state_dict()
        )
        for f in (soft, relu, pooled)
    ]
    assert names[0] == names[1] == names[2] and "blocks.0.mlp.W_router.weight" in names[0]


# ------------------------------------------------------------------ hook points
def test_hook_point_runs_pre_hooks_and_is_free_without_hooks():
    hp = HookPoint()
    x = torch.randn(2, 3)
    assert hp(x) is x and not hp.has_hooks
    handle = hp.register_forward_pre_hook(lambda module, args: (args[0] * 2,))
    try:
        torch.testing.assert_close(hp(x), 2 * x)
    finally:
        handle.remove()
    assert hp(x) is x


def test_pre_hook_on_a_model_hook_point_runs_and_reset_hooks_removes_it():
    model = archs.Transformer(ModelConfig(vocab_size=16, d_model=16, n_heads=2))
    x = torch.randint(0, 16, (1, 5))
    seen = []
    model.hook_dict["blocks.0.attn.hook_pattern"].register_forward_pre_hook(
        lambda module, args: seen.append(args[0].shape)
    )
    model(x)
    assert seen == [(1, 2, 5, 5)]  # the pattern is materialised for a pre-hook too
    model.reset_hooks()
    model(x)
    assert len(seen) == 1


# ------------------------------------------- the toy kind through the whole analysis
def test_a_new_kind_gets_every_score_circuit_dashboard_and_report_column(toy, tmp_path, capsys):
    """The toy kind, defined in this file alone, trained beside dense by `compare`,
    gets the kind-independent scores, circuits, report columns, `glassbox analyze`,
    dashboards and the text analysis, with no edit anywhere else."""
    import json

    from glassbox.analysis.pipeline import Analysis
    from glassbox.analysis.text_analysis import text_report
    from glassbox.cli import main
    from glassbox.compare import compare, load_compare_config
    from glassbox.training.data import build_datasets, data_config_from_dict
    from tests.test_text_analysis import TINY
    from tests.test_training import FAST

    args = [
        f"out_dir={tmp_path / 'report'}", "seeds=[0]", "analysis_examples=32",
        "architectures={dense: configs/dense.yaml, toy: configs/dense.yaml}",
        "arch_overrides={toy: [model.ffn.kind=toy, model.ffn.toy.width=96]}",
        "posthoc.enabled=false", "jobs=1", *FAST, f"data.cache_dir={tmp_path / 'data'}",
        "trainer.max_steps=12", "optim.warmup_steps=2",
    ]  # fmt: skip
    report = compare(load_compare_config("configs/compare.yaml", args))
    runs = {r.arch: r for r in report.runs}
    # every score that does not belong to one kind, the toy's as the dense model's
    every_kind = ("interp.coverage", "interp.lift_pooled", "interp.info_beyond_token",
                  "interp.skill_circuit_fraction.copy", "interp.microcircuit_tasks", "interp.graph_nodes80")  # fmt: skip
    for key in every_kind:
        assert runs["toy"].interp.get(key) is not None, key
        assert f"baselines.init.{key}" in runs["toy"].interp

    # what the dense run has and the toy lacks comes from clustering dense's neurons only
    # (the older specialisation and modularity scores: `cluster_units`)
    def name(key: str) -> str:
        return key.split("interp.", 1)[1].split(".")[0]

    dense_dir = tmp_path / "report" / "runs" / "dense-seed0" / "analysis"
    clustered = Analysis.read(dense_dir / "analysis.json").sections["interp"]["moe"]["summary"]
    clustered = {name(k) for k in clustered} | {"keep25_cost", "delta_target", "delta_others"}
    only_dense = {name(k) for k in set(runs["dense"].interp) - set(runs["toy"].interp)}
    assert only_dense <= clustered, only_dense - clustered
    circuit = runs["toy"].interp["interp.skill_circuit_size.copy"]
    assert 0 < circuit <= 2 * 4 + 96 + 128  # heads, toy units, the dense layer's neurons
    assert "| toy |" in report.path.read_text()
    run_dir = tmp_path / "report" / "runs" / "toy-seed0"
    saved = Analysis.read(run_dir / "analysis" / "analysis.json")  # compare's: the one schema
    assert saved.summary["interp.coverage"] == runs["toy"].interp["interp.coverage"]

    ckpt = run_dir / "checkpoint"
    out = tmp_path / "analyze"
    assert main(["analyze", str(ckpt), "--out", str(out), "--examples", "32"]) == 0
    analysed = Analysis.read(out / "analysis.json")
    assert set(analysed.sections) == {"interp", "mechanistic"} and analysed.data == "skills"
    assert analysed.summary["interp.coverage"] == pytest.approx(
        runs["toy"].interp["interp.coverage"]
    )  # the same pipeline on the same examples

    feats = tmp_path / "features"
    assert main(["export", str(ckpt), "--to", "features", str(feats), "--examples", "16"]) == 0
    layer0 = json.loads((feats / "layer0.json").read_text())
    assert layer0["unitType"] == "toy unit" and layer0["n_units"] == 96
    assert layer0["hook"] == "blocks.0.mlp.hook_hidden"

    # text: a toy model read by domain, its units' write directions on the pages
    cfg = data_config_from_dict(
        {"source": "text", "cache_dir": str(tmp_path / "text"), "text": {
            "paths": [p.split("=")[1] for p in TINY if p.startswith("data.text.paths")][0]
            .strip("[]").split(","), "extensions": [".py"], "vocab_size": 320,
            "block_size": 64}}
    )  # fmt: skip
    suite = build_datasets(cfg)
    model = archs.Transformer(
        model_config_from_dict({**toy_config(width=24), "vocab_size": suite.tokenizer.get_vocab_size(), "max_seq_len": 64})
    ).eval()  # fmt: skip
    text = text_report(model, suite, tmp_path / "text_out", n_examples=8)
    assert {"0", "1"} <= set(text["pages"]) and text["summary"]["interp.n_domains_held_out"] > 0
