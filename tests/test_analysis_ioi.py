"""IOI: the logit difference on constructed logits, the corruptions, and head
patching on models where one head is, by construction, the only path between
positions (it scores exactly 1, every other head exactly 0), for every FFN kind."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from glassbox.analysis.ioi import (
    corrupt_ioi,
    ioi_head_patching,
    ioi_logit_diff,
    logit_diff,
    logit_diff_metric,
    plot_ioi_heads,
)
from glassbox.archs import FFNConfig, ModelConfig, MoEConfig, TranscoderConfig, Transformer

V = 40
NAMES = list(range(20, 30))
WHEN, AND, WENT, TO, THE, PLACE, COMMA, GAVE, A, OBJ = range(8, 18)
S2_POS = 10
FFNS = {
    "dense": FFNConfig(d_ff=48),
    "moe": FFNConfig(kind="moe", moe=MoEConfig(n_experts=4, k=2, d_expert=16)),
    "transcoder": FFNConfig(kind="transcoder", transcoder=TranscoderConfig(d_latent=48, k=4)),
}


def prompts(n: int = 4, seed: int = 0):
    """[bos] When IO and S went to the P , S gave a O to  (ABBA), answer IO."""
    g = torch.Generator().manual_seed(seed)
    rows, io, s = [], [], []
    for _ in range(n):
        a, b = torch.tensor(NAMES)[torch.randperm(len(NAMES), generator=g)[:2]].tolist()
        rows.append([1, WHEN, a, AND, b, WENT, TO, THE, PLACE, COMMA, b, GAVE, A, OBJ, TO])
        io.append(a)
        s.append(b)
    return torch.tensor(rows), torch.tensor(io), torch.tensor(s)


def test_logit_diff_closed_form():
    logits = torch.zeros(2, 3, 5)
    logits[0, 2, 1], logits[0, 2, 4] = 3.0, 1.0
    logits[1, 1, 0], logits[1, 1, 2] = -1.0, 2.0
    io, s = torch.tensor([1, 0]), torch.tensor([4, 2])
    torch.testing.assert_close(
        logit_diff(logits, io, s, torch.tensor([2, 1])), torch.tensor([2.0, -3.0])
    )
    torch.testing.assert_close(logit_diff(logits, io, s, -1), torch.tensor([2.0, 0.0]))
    assert float(logit_diff_metric(io, s, torch.tensor([2, 1]))(logits)) == pytest.approx(-0.5)


def test_corruptions():
    tokens, io, s = prompts()
    flipped = corrupt_ioi(tokens, io, s, mode="s2_io", s2_pos=torch.full((4,), S2_POS))
    assert torch.equal(flipped[:, S2_POS], io)
    assert torch.equal(flipped[:, :S2_POS], tokens[:, :S2_POS])
    assert torch.equal(flipped[:, S2_POS + 1 :], tokens[:, S2_POS + 1 :])
    abc = corrupt_ioi(tokens, io, s, name_ids=NAMES, seed=1)
    for b in range(4):
        changed = abc[b] != tokens[b]
        assert torch.equal(changed, (tokens[b] == io[b]) | (tokens[b] == s[b]))
        new_io, new_s = abc[b][tokens[b] == io[b]].unique(), abc[b][tokens[b] == s[b]].unique()
        assert len(new_io) == len(new_s) == 1 and new_io != new_s
        assert {int(new_io), int(new_s)}.isdisjoint({int(io[b]), int(s[b])})
        assert int(new_io) in NAMES and int(new_s) in NAMES
    with pytest.raises(ValueError, match="s2_pos"):
        corrupt_ioi(tokens, io, s, mode="s2_io", s2_pos=torch.full((4,), 3))
    with pytest.raises(ValueError, match="name_ids"):
        corrupt_ioi(tokens, io, s)


def one_head_model(ffn: FFNConfig, layer: int = 1, head: int = 2) -> Transformer:
    """Random weights, but every head except (layer, head) has W_O = 0: that head
    is the only way information moves between positions."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, d_model=32, n_layers=2, n_heads=4, max_seq_len=32, ffn=ffn)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(10)
        for i, block in enumerate(model.blocks):
            keep = block.attn.W_O.weight[:, head * 8 : (head + 1) * 8].clone()
            block.attn.W_O.weight.zero_()
            if i == layer:
                block.attn.W_O.weight[:, head * 8 : (head + 1) * 8] = keep
    return model


@pytest.mark.parametrize("kind", list(FFNS))
def test_head_patching_finds_the_only_path(kind):
    model = one_head_model(FFNS[kind])
    tokens, io, s = prompts()
    corrupted = corrupt_ioi(tokens, io, s, mode="s2_io", s2_pos=torch.full((4,), S2_POS))
    res = ioi_head_patching(model, tokens, corrupted, io, s)
    assert res.scores.shape == (2, 4) and res.dims == ("layer", "head")
    assert res.clean == pytest.approx(float(ioi_logit_diff(model, tokens, io, s).mean()), abs=1e-5)
    assert res.corrupted == pytest.approx(
        float(ioi_logit_diff(model, corrupted, io, s).mean()), abs=1e-5
    )
    want = torch.zeros(2, 4)
    want[1, 2] = 1
    torch.testing.assert_close(res.scores, want, rtol=0, atol=1e-4)
    by_pos = ioi_head_patching(model, tokens, corrupted, io, s, by_position=True)
    assert by_pos.scores.shape == (2, 4, tokens.shape[1])
    # positions before the corrupted token hold identical values in both runs
    torch.testing.assert_close(
        by_pos.scores[..., :S2_POS], torch.zeros(2, 4, S2_POS), rtol=0, atol=1e-5
    )


def test_plot(tmp_path):
    model = one_head_model(FFNS["dense"])
    tokens, io, s = prompts()
    corrupted = corrupt_ioi(tokens, io, s, name_ids=NAMES)
    res = ioi_head_patching(model, tokens, corrupted, io, s, pos=torch.full((4,), 14))
    fig = plot_ioi_heads(res, path=tmp_path / "ioi.png")
    assert isinstance(fig, Figure) and (tmp_path / "ioi.png").stat().st_size > 0
