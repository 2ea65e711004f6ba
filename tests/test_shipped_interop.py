"""Interop proven on the shipped checkpoints (checkpoints/; none until they are
trained, then one case each): every shipped model whose structure HF transformers
holds exports through `glassbox export --to hf` (dense SwiGLU -> LlamaForCausalLM,
softmax top-k MoE -> MixtralForCausalLM) with float32 logits within 1e-4 of ours on
held-out examples of its own data, and the same greedy continuations."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from glassbox.archs import load_pretrained, shipped_checkpoints  # noqa: E402
from glassbox.archs.checkpoint import read_config, shipped_dir  # noqa: E402
from glassbox.cli import main  # noqa: E402
from glassbox.training.evaluate import load_suite_for  # noqa: E402
from tests.parity import greedy_equal  # noqa: E402

ATOL = 1e-4
HF_CLASS = {"dense": "LlamaForCausalLM", "moe": "MixtralForCausalLM"}


def _exportable() -> list[tuple[str, str]]:
    """(shipped name, the HF class it exports as) for the structures HF holds."""
    out = []
    for name in shipped_checkpoints():
        model = read_config(shipped_dir() / name)["model"]
        ffn = model["ffn"]
        if (model.get("weight_sparsity") or {}).get("residual_topk", 0) or model.get(
            "ffn_by_layer"
        ):
            continue
        if ffn["kind"] == "dense" and ffn.get("activation") == "swiglu":
            out.append((name, HF_CLASS["dense"]))
        elif ffn["kind"] == "moe" and ffn["moe"]["router"] == "softmax":
            if ffn["moe"]["n_shared_experts"] == 0 and ffn["moe"]["normalize_weights"]:
                out.append((name, HF_CLASS["moe"]))
    return out


def _held_out(path, model, n: int = 16) -> list[list[int]]:
    """The first n validation examples of the checkpoint's own data, as token ids."""
    suite, _ = load_suite_for(path, model)
    rows = suite.splits["val"].select(range(n))
    return [list(r["input_ids"]) for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "hf_class"), _exportable())
def test_shipped_checkpoint_in_hf_transformers(name, hf_class, tmp_path):
    out = tmp_path / "hf"
    assert main(["export", f"glassbox/{name}", "--to", "hf", str(out)]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == hf_class
    path = shipped_dir() / name
    model = load_pretrained(f"glassbox/{name}")
    rows = _held_out(path, model)
    T = max(map(len, rows))
    x = torch.tensor([r + [model.cfg.pad_token_id] * (T - len(r)) for r in rows])
    with torch.no_grad():
        ours, theirs = model(x), hf(x).logits
    real = x != model.cfg.pad_token_id
    torch.testing.assert_close(theirs[real], ours[real], atol=ATOL, rtol=0)
    # greedy continuations of the first half of four examples (left-padded for HF)
    prompts = [r[: max(2, len(r) // 2)] for r in rows[:4]]
    greedy_equal(model, hf, prompts, 8)
