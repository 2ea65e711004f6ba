"""The post-hoc route (training/transcoder_fit.py): activation streaming and caching,
fitting, splicing, and the cost comparison."""

from __future__ import annotations

import pytest
import torch

from glassbox.analysis.feature_cost import measure_feature_cost
from glassbox.analysis.splicing import splice_fidelity
from glassbox.archs import FFNConfig, ModelConfig, TranscoderConfig, Transformer, load_pretrained
from glassbox.archs import save_pretrained as save
from glassbox.archs.transcoder import Transcoder
from glassbox.training.transcoder_fit import MLPActivations, fit_transcoders, splice


def dense_model() -> Transformer:
    torch.manual_seed(0)
    ffn = FFNConfig(kind="dense", activation="gelu", d_ff=64)
    cfg = ModelConfig(vocab_size=48, d_model=32, n_layers=2, n_heads=2, max_seq_len=32, ffn=ffn)
    return Transformer(cfg).eval()


def token_batches(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 48, (4, 16), generator=g)
        att = torch.ones_like(ids)
        att[1, 12:] = 0
        out.append({"input_ids": ids, "attention_mask": att})
    return out


def reference_pairs(model, batches, layers):
    xs, ys = [], []
    for b in batches:
        _, cache = model.run_with_cache(b["input_ids"], attention_mask=b["attention_mask"])
        m = b["attention_mask"].bool()
        xs.append(torch.stack([cache[f"blocks.{i}.hook_mlp_in"][m] for i in layers], 1))
        ys.append(torch.stack([cache[f"blocks.{i}.hook_mlp_out"][m] for i in layers], 1))
    return torch.cat(xs), torch.cat(ys)


def test_activations_are_the_mlp_pairs_of_real_tokens(tmp_path):
    model, bs = dense_model(), token_batches()
    rx, ry = reference_pairs(model, bs, [1, 0])
    assert rx.shape == (6 * (64 - 4), 2, 32)
    ds = MLPActivations(model, bs, [1, 0], batch_tokens=100, buffer_tokens=250, shuffle=False)
    got = list(ds)
    assert [x.shape[0] for x, _ in got] == [100, 100, 100, 60]  # 360 real tokens
    torch.testing.assert_close(torch.cat([x for x, _ in got]), rx)
    torch.testing.assert_close(torch.cat([y for _, y in got]), ry)
    # Shuffled: the same rows, in another order, x still paired with its y.
    ds = MLPActivations(model, bs, [1, 0], batch_tokens=100, buffer_tokens=250, seed=3)
    pairs = list(ds)  # one epoch (each epoch has its own order)
    sx, sy = torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])
    assert not torch.equal(sx, rx)
    order = rx[:, 0, 0].argsort()
    sorder = sx[:, 0, 0].argsort()
    torch.testing.assert_close(sx[sorder], rx[order])
    torch.testing.assert_close(sy[sorder], ry[order])


def test_disk_cache_round_trip_without_the_model(tmp_path):
    model, bs = dense_model(), token_batches()
    rx, ry = reference_pairs(model, bs, [0])
    ds = MLPActivations(
        model, bs, [0], batch_tokens=64, shuffle=False, cache_dir=tmp_path, shard_tokens=100
    )
    manifest = ds.build_cache()
    assert manifest["n_tokens"] == rx.shape[0] and len(manifest["shards"]) == 4
    assert (tmp_path / "manifest.json").is_file()
    # A new dataset on the same directory reads the shards: the model is never run.
    ds2 = MLPActivations(model, [], [0], batch_tokens=64, shuffle=False, cache_dir=tmp_path)
    ds2.model = None
    x = torch.cat([x for x, _ in ds2])
    y = torch.cat([y for _, y in ds2])
    torch.testing.assert_close(x, rx)
    torch.testing.assert_close(y, ry)
    with pytest.raises(ValueError, match="caches layers"):
        list(MLPActivations(model, bs, [1], cache_dir=tmp_path))


def test_fit_lowers_fvu_and_splice_gives_a_loadable_checkpoint(tmp_path):
    model = dense_model()
    train, held_out = token_batches(8, seed=1), token_batches(2, seed=2)
    cfg = TranscoderConfig(d_latent=128, k=8)
    # Before: a transcoder initialised as the fit initialises it, not trained.
    before = fit_transcoders(model, train, [0, 1], cfg, max_steps=1, lr=0.0, batch_tokens=256)
    tcs, module = fit_transcoders(
        model,
        train,
        [0, 1],
        cfg,
        max_steps=150,
        lr=3e-3,
        batch_tokens=256,
        cache_dir=tmp_path / "acts",
        return_module=True,
    )
    assert set(tcs) == {0, 1} and all(isinstance(t, Transcoder) for t in tcs.values())
    f_before = splice_fidelity(model, splice(model, before), held_out)
    spliced = splice(model, tcs)
    f_after = splice_fidelity(model, spliced, held_out)
    for i in (0, 1):
        assert f_after["layers"][i]["fvu"] < 0.6 * f_before["layers"][i]["fvu"]
        assert f_after["layers"][i]["fvu"] < 0.8
        assert f_after["layers"][i]["l0"] <= 8
    assert module.history[-1]["fvu.L0"] < module.history[0]["fvu.L0"]
    for tc in tcs.values():  # decoder rows back on the unit sphere after every step
        torch.testing.assert_close(tc.W_dec.norm(dim=-1), torch.ones(128))

    # The spliced model: transcoders in, everything else the dense model's.
    assert spliced.cfg.ffn_by_layer["1"].kind == "transcoder"
    assert spliced.cfg.ffn_by_layer["1"].transcoder.d_latent == 128
    torch.testing.assert_close(spliced.blocks[1].mlp.W_enc, tcs[1].W_enc)
    torch.testing.assert_close(spliced.blocks[0].attn.W_Q.weight, model.blocks[0].attn.W_Q.weight)
    ids = held_out[0]["input_ids"]
    _, cache = model.run_with_cache(ids, names_filter="blocks.0.hook_mlp_in")
    _, cache_s = spliced.run_with_cache(ids, names_filter="blocks.0.hook_mlp_out")
    torch.testing.assert_close(
        cache_s["blocks.0.hook_mlp_out"], tcs[0](cache["blocks.0.hook_mlp_in"])
    )

    save(spliced, tmp_path / "ckpt")
    loaded = load_pretrained(tmp_path / "ckpt")
    assert isinstance(loaded.blocks[0].mlp, Transcoder)
    torch.testing.assert_close(loaded(ids), spliced(ids), rtol=0, atol=0)


def test_splice_rejects_a_transcoder_of_the_wrong_width():
    model = dense_model()
    with pytest.raises(ValueError, match="d_model 16, not 32"):
        splice(model, {0: Transcoder(16, TranscoderConfig(d_latent=8, k=2))})


def test_measure_feature_cost_reports_both_routes():
    dense = dense_model()
    torch.manual_seed(0)
    ffn = FFNConfig(kind="transcoder", transcoder=TranscoderConfig(d_latent=128, k=8))
    tc_cfg = ModelConfig(vocab_size=48, d_model=32, n_layers=2, n_heads=2, max_seq_len=32, ffn=ffn)
    by_construction = Transformer(tc_cfg).eval()
    bs = token_batches(2)
    res, tcs = measure_feature_cost(
        by_construction,
        dense,
        bs,
        [0, 1],
        cfg=TranscoderConfig(d_latent=128, k=8),
        max_steps=5,
        batch_tokens=64,
        return_transcoders=True,
    )
    assert sorted(tcs) == [0, 1] and tcs[0].d_latent == 128
    # An epoch is 120 tokens: batches of 64, then the 56 left; 5 steps = 64+56+64+56+64.
    assert res["fit_tokens"] == 304
    assert res["tokens"] == 2 * (64 - 4)
    # Fitting (5 steps on more tokens than the pass reads) costs more than one pass.
    assert res["ratio"] > 1 and res["flops_ratio"] > 1
    assert res["post_hoc_s"] == pytest.approx(res["post_hoc_fit_s"] + res["post_hoc_run_s"])
