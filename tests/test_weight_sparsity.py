"""Weight-sparse models (archs/weight_sparsity.py): the schedule, exact per-matrix
counts, the mask buffers through save and load, the residual TopK, and a tiny
weight-sparse model that trains."""

from __future__ import annotations

import json
import math

import pytest
import torch

from glassbox import archs
from glassbox.archs import ConfigError, FFNConfig, ModelConfig, MoEConfig, Transformer
from glassbox.archs.config import TranscoderConfig, model_config_from_dict
from glassbox.archs.export.errors import ExportError, llama_ffn
from glassbox.archs.weight_sparsity import (
    MASK_SUFFIX,
    WeightSparsityConfig,
    apply_weight_sparsity,
    kept_count,
    nonzero_params,
    sparsified,
    weight_masks,
)
from glassbox.training.config import load_config
from glassbox.training.evaluate import evaluate_model, load_suite_for
from glassbox.training.train import train
from tests.test_training import fast_cfg

FFNS = {
    "dense": FFNConfig(kind="dense", d_ff=64),
    "moe": FFNConfig(kind="moe", moe=MoEConfig(n_experts=4, k=2, d_expert=16)),
    "transcoder": FFNConfig(
        kind="transcoder", transcoder=TranscoderConfig(d_latent=64, k=4, skip=True)
    ),
}


def make_model(kind: str = "dense", vocab: int = 40, tie: bool = False, **ws) -> Transformer:
    torch.manual_seed(0)
    ws = {"target_density": 0.25, **ws}
    cfg = ModelConfig(
        vocab_size=vocab,
        tie_embeddings=tie,
        d_model=32,
        n_layers=2,
        n_heads=4,
        max_seq_len=32,
        ffn=FFNS[kind],
        weight_sparsity=WeightSparsityConfig(**ws),
    )
    model = Transformer(cfg)
    with torch.no_grad():  # no exact zeros to start (the skip transcoder's W_skip is 0)
        for p in model.parameters():
            p.add_(torch.rand_like(p) * 1e-3 + 1e-4)
    return model


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("target_density", 0.0, "(0, 1]"),
        ("target_density", 1.5, "(0, 1]"),
        ("anneal_fraction", -0.1, "[0, 1]"),
        ("residual_topk", 33, "d_model=32"),
    ],
)
def test_config_errors_name_the_key(key, value, fragment):
    d = {"vocab_size": 40, "d_model": 32, "weight_sparsity": {key: value}}
    with pytest.raises(ConfigError) as e:
        model_config_from_dict(d)
    assert f"model.weight_sparsity.{key}" in str(e.value) and fragment in str(e.value)


def test_schedule_is_linear_and_reaches_target_at_half_the_run():
    c = WeightSparsityConfig(target_density=0.1, anneal_fraction=0.5)
    T = 1000
    assert c.density_at(0, T) == 1.0
    assert c.density_at(250, T) == pytest.approx(0.55)  # half way down
    assert c.density_at(500, T) == pytest.approx(0.1)  # the target at half the run
    assert c.density_at(499, T) > 0.1
    assert c.density_at(1000, T) == pytest.approx(0.1)
    assert WeightSparsityConfig(target_density=0.3, anneal_fraction=0).density_at(0, T) == 0.3
    assert not WeightSparsityConfig().enabled  # the default is dense


@pytest.mark.parametrize("kind", list(FFNS))
def test_prune_keeps_exactly_the_top_magnitudes_per_matrix(kind):
    model = make_model(kind)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    apply_weight_sparsity(model, 0.3)
    masks = weight_masks(model)
    names = {name for name, _, _ in sparsified(model)}
    assert set(masks) == names
    # Every matrix of two or more dims but the embeddings; norm gains and biases dense.
    want = {n for n, p in model.named_parameters() if p.dim() >= 2} - {"W_E.weight", "W_U.weight"}
    assert names == want
    for name, p in model.named_parameters():
        if name not in names:
            torch.testing.assert_close(p, before[name], rtol=0, atol=0)
            continue
        w, old, mask = p.detach(), before[name], masks[name]
        # an MoE expert weight (E, d_in, d_out) is E matrices, each at the density
        rows = (w.reshape(w.shape[0], -1), old.reshape(w.shape[0], -1), mask.reshape(w.shape[0], -1)) if w.dim() == 3 else (w.reshape(1, -1), old.reshape(1, -1), mask.reshape(1, -1))  # fmt: skip
        for r_w, r_old, r_mask in zip(*rows):
            k = kept_count(r_w.numel(), 0.3)
            assert int(r_mask.sum()) == k == int((r_w != 0).sum()), name
            torch.testing.assert_close(r_w[r_mask], r_old[r_mask], rtol=0, atol=0)
            assert (r_w[~r_mask] == 0).all()
            assert r_old[r_mask].abs().min() >= r_old[~r_mask].abs().max(), name


def test_embeddings_pruned_only_when_asked_and_tied_once():
    model = make_model(include_embeddings=True, vocab=48)
    apply_weight_sparsity(model, 0.5)
    w = model.W_E.weight
    assert int((w != 0).sum()) == kept_count(w.numel(), 0.5)
    tied = make_model(include_embeddings=True, vocab=48, tie=True)  # W_U is W_E
    assert [n for n, _, _ in sparsified(tied)].count("W_E.weight") == 1
    assert "W_U.weight" not in [n for n, _, _ in sparsified(tied)]


def test_nonzero_params_counts_what_is_left():
    model = make_model()
    total = model.num_params()
    assert nonzero_params(model) == total
    apply_weight_sparsity(model, 0.25)
    pruned = sum(p.numel() - kept_count(p.numel(), 0.25) for _, m, a in sparsified(model) for p in [getattr(m, a)])  # fmt: skip
    assert nonzero_params(model) == total - pruned


def test_masks_and_zeros_survive_save_and_load(tmp_path):
    model = make_model("moe")
    apply_weight_sparsity(model, 0.2)
    archs.save_pretrained(model, tmp_path / "ckpt")
    loaded = archs.load_pretrained(tmp_path / "ckpt")
    masks, loaded_masks = weight_masks(model), weight_masks(loaded)
    assert set(loaded_masks) == set(masks) and masks
    for name, p in loaded.named_parameters():
        torch.testing.assert_close(p, dict(model.named_parameters())[name], rtol=0, atol=0)
        if name in masks:
            assert torch.equal(loaded_masks[name], masks[name])
            assert (p[~loaded_masks[name]] == 0).all()
    tokens = torch.randint(0, 40, (2, 12))
    torch.testing.assert_close(loaded(tokens), model.eval()(tokens))
    # a dense model has no masks, so its checkpoints keep their tensor names
    dense = Transformer(ModelConfig(vocab_size=40, d_model=32, n_heads=4))
    assert not any(k.endswith(MASK_SUFFIX) for k in dense.state_dict())


def test_residual_topk_keeps_the_k_largest_and_hooks_see_them():
    model = make_model(target_density=1.0, residual_topk=5)
    tokens = torch.randint(0, 40, (2, 9))
    _, cache = model.run_with_cache(tokens)
    post0, pre1 = cache["blocks.0.hook_resid_post"], cache["blocks.1.hook_resid_pre"]
    torch.testing.assert_close(post0, pre1)  # the next block reads what the hook saw
    for i in range(2):
        post = cache[f"blocks.{i}.hook_resid_post"]
        assert ((post != 0).sum(-1) == 5).all()
        # the survivors are the 5 largest of the dense sum (resid_mid + mlp_out)
        dense = cache[f"blocks.{i}.hook_resid_mid"] + cache[f"blocks.{i}.hook_mlp_out"]
        kept = post != 0
        torch.testing.assert_close(post[kept], dense[kept])
        smallest_kept = dense.abs().masked_fill(~kept, float("inf")).amin(-1)
        largest_dropped = dense.abs().masked_fill(kept, 0).amax(-1)
        assert (smallest_kept >= largest_dropped).all()
    with pytest.raises(ExportError, match="residual_topk"):
        llama_ffn(model.cfg, "hf")


def _nonzero_per_matrix(path) -> dict[str, tuple[int, int]]:
    model = archs.load_pretrained(path)
    return {
        name: (int((getattr(m, a) != 0).sum()), getattr(m, a).numel())
        for name, m, a in sparsified(model)
        if getattr(m, a).dim() == 2
    }


def test_training_prunes_to_the_scheduled_density_after_each_step(tmp_path):
    """4 optimizer steps, annealed over all of them to 0.2: the exported matrices hold
    exactly kept_count(n, 0.2) non-zeros (after 3 of 4 steps it would be 0.4: the
    hook sees the step it follows), and metrics.json reports the non-zero count."""
    cfg = fast_cfg(
        tmp_path,
        "trainer.max_steps=4",
        "trainer.val_every_n_steps=4",
        "optim.warmup_steps=1",
        "model.weight_sparsity.target_density=0.2",
        "model.weight_sparsity.anneal_fraction=1.0",
    )
    export = train(cfg)
    counts = _nonzero_per_matrix(export)
    assert counts
    for name, (nonzero, n) in counts.items():
        assert nonzero == kept_count(n, 0.2), name
    metrics = json.loads((export / "metrics.json").read_text())
    model = archs.load_pretrained(export)
    assert metrics["params"]["nonzero"] == nonzero_params(model) < metrics["params"]["total"]


@pytest.mark.slow
def test_tiny_weight_sparse_model_learns(tmp_path):
    cfg = fast_cfg(
        tmp_path,
        "trainer.max_steps=200",
        "trainer.val_every_n_steps=200",
        "optim.warmup_steps=20",
        "model.weight_sparsity.target_density=0.3",
    )
    export = train(cfg)
    metrics = json.loads((export / "metrics.json").read_text())
    model = archs.load_pretrained(export)
    torch.manual_seed(cfg.run.seed)
    untrained = evaluate_model(
        archs.Transformer(model.cfg), load_suite_for(export, model)[0], max_batches=4
    )
    assert untrained["val_loss"] > 0.9 * math.log(model.cfg.vocab_size)
    assert metrics["val_loss"] < 0.5 * untrained["val_loss"], metrics
    for name, (nonzero, n) in _nonzero_per_matrix(export).items():
        assert nonzero == kept_count(n, 0.3), name


def test_weight_sparse_config_matches_dense_nonzero_params():
    """configs/weight_sparse.yaml: within 3% of the dense baseline's non-zero
    parameters once annealed (the arithmetic in configs/model/weight_sparse.yaml)."""
    vocab = 242  # the skill suite's tokenizer
    counts = {}
    for name in ("dense", "weight_sparse"):
        cfg = load_config(f"configs/{name}.yaml").model
        cfg.vocab_size = vocab
        model = Transformer(cfg)
        if cfg.weight_sparsity.enabled:
            apply_weight_sparsity(model, cfg.weight_sparsity.target_density)
        counts[name] = nonzero_params(model)
    assert counts["weight_sparse"] == pytest.approx(counts["dense"], rel=0.03), counts
