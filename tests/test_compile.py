"""trainer.compile=true: the compiled run trains to the eager run's losses step by
step, and its exported checkpoint (the uncompiled weights) loads and gives the eager
export's logits. Inductor compiles C++ on the CPU: about a minute cold, hence slow."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from glassbox.archs import Transformer, load_pretrained
from glassbox.ladder import load_ladder_config, run_configs, rung_config
from glassbox.training.config import load_config
from glassbox.training.train import train

# Packed rows (fixed shapes): the compiled graph is built once, as on a GPU.
TINY = [
    "model.d_model=32",
    "model.ffn.d_ff=64",
    "model.max_seq_len=64",
    "data.mix={copy: 1, modadd: 0, reverse: 0, sort: 0, addition: 0, dyck: 0, facts: 0, ioi: 0}",
    "data.copy.max_len=5",
    "data.n_train=500",
    "data.n_val=50",
    "data.n_test=50",
    "data.n_ood=20",
    "data.pack_length=64",
    "data.batch_size=4",
    "trainer.max_steps=20",
    "trainer.log_every_n_steps=1",
    "trainer.val_every_n_steps=20",
    "trainer.limit_val_batches=1",
    "trainer.progress_bar=false",
    "trainer.loggers=[csv]",
    "optim.warmup_steps=5",
    "run.eval_max_batches=2",
]


def _run(tmp_path, compiled: bool):
    out = tmp_path / f"compile={compiled}"
    cfg = load_config(
        "configs/dense.yaml",
        TINY
        + [
            f"trainer.compile={str(compiled).lower()}",
            f"data.cache_dir={tmp_path / 'data'}",
            f"run.out_dir={out}",
        ],
    )
    export = train(cfg)
    with open(out / "logs" / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    return export, losses, json.loads((export / "metrics.json").read_text())


@pytest.mark.slow
def test_compiled_run_matches_eager_and_its_export_loads(tmp_path):
    eager, eager_losses, eager_metrics = _run(tmp_path, compiled=False)
    compiled, compiled_losses, compiled_metrics = _run(tmp_path, compiled=True)
    assert len(compiled_losses) == len(eager_losses) == 20
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    assert eager_losses[-1] < 0.9 * eager_losses[0]  # it trained
    assert compiled_metrics["val_loss"] == pytest.approx(eager_metrics["val_loss"], rel=1e-4)
    a, b = load_pretrained(compiled), load_pretrained(eager)
    assert set(a.state_dict()) == set(b.state_dict())  # no "_orig_mod." prefixes
    tokens = torch.randint(0, a.cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a(tokens), b(tokens), atol=1e-3, rtol=1e-3)


# --- the ladder's L rung, as benchmarks/scale_gpu.sh compiles it on a GPU -------------


def _l_rung_models():
    cc = rung_config(load_ladder_config(), "L", "gpu")
    return {k: cfg.model for k, cfg in run_configs(cc).items()}


def _packed(vocab: int):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, 48), generator=g)
    segments = torch.tensor([[0] * 20 + [1] * 28, [0] * 48])  # two examples in row 0
    return ids, segments


def _step(model, forward, ids, segments):
    """One training forward (`forward`: the model, or it compiled) and backward under
    bf16 autocast (the GPU's bf16-mixed): the logits, the loss with the auxiliary
    losses, every parameter's gradient."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = forward(ids, segment_ids=segments)
        loss = torch.nn.functional.cross_entropy(
            logits.float()[:, :-1].flatten(0, 1), ids[:, 1:].flatten()
        )
        loss = loss + sum(model.aux_losses().values())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach().float(), loss.item(), grads


@pytest.mark.parametrize("kind", ["dense", "moe", "transcoder", "weight_sparse"])
def test_l_rung_kinds_compile_to_one_graph_and_match_eager(kind):
    """Each kind of the ladder's L rung, as configured for the GPU run, traces to one
    graph (fullgraph=True raises at a graph break: moe's expert counts and the
    transcoder's AuxK branch once broke it, once per layer) and its compiled training
    step gives eager's logits, loss and gradients. aot_eager: dynamo and autograd's
    tracing, no code generation, so seconds on a CPU. The transcoder is checked with
    half its latents dead, where AuxK adds its term."""
    torch.manual_seed(0)
    model = Transformer(_l_rung_models()[kind]).train()
    if kind == "transcoder":
        for block in model.blocks:
            block.mlp.tokens_since_fired[::2] = block.mlp.cfg.dead_after_tokens
    ids, segments = _packed(model.cfg.vocab_size)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    eager = _step(model, model, ids, segments)
    model.load_state_dict(state)  # the training state (dead-latent counters) as before
    torch._dynamo.reset()
    compiled = _step(
        model, torch.compile(model, backend="aot_eager", fullgraph=True), ids, segments
    )
    torch.testing.assert_close(compiled[0], eager[0], atol=2e-2, rtol=2e-2)
    assert compiled[1] == pytest.approx(eager[1], rel=1e-3)
    assert compiled[2].keys() == eager[2].keys() and eager[2]
    for name, grad in eager[2].items():
        torch.testing.assert_close(compiled[2][name], grad, atol=2e-3, rtol=5e-2, msg=name)


def test_moe_compiles_in_float32_on_a_cpu():
    """The grouped-matmul kernel's shape function accepts bf16 only, while eager's CPU
    kernel runs float32 too: a compiled float32 MoE takes the padded path instead of
    failing (it once raised 'Expected inputs of BF16 type')."""
    torch.manual_seed(0)
    model = Transformer(_l_rung_models()["moe"]).train()
    ids, _ = _packed(model.cfg.vocab_size)
    with torch.no_grad():
        eager = model(ids)
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="aot_eager")(ids)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
