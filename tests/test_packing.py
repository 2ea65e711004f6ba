"""Packed rows: a packed row's logits are each example's logits alone (every FFN
kind, fused and hooked attention); loss and per-skill metrics on packed batches equal
the unpacked ones; the packed sampler covers every example once per epoch, resumes
and shards exactly; a packed run trains."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from glassbox.archs import (
    FFNConfig,
    ModelConfig,
    MoEConfig,
    TranscoderConfig,
    Transformer,
    load_pretrained,
)
from glassbox.archs.config import ConfigError
from glassbox.archs.transformer import segment_positions
from glassbox.training.config import load_config
from glassbox.training.data import DataConfig, build_datasets, collate
from glassbox.training.data.packing import (
    PackedBatches,
    PackedBatchSampler,
    collate_packed,
    example_lengths,
    next_fit,
)
from glassbox.training.datamodule import SuiteDataModule
from glassbox.training.evaluate import ioi_spec
from glassbox.training.skill_scores import SkillMetrics, masked_lm_loss
from glassbox.training.train import train

FFNS = {
    "dense": FFNConfig(kind="dense", d_ff=64),
    "moe": FFNConfig(kind="moe", moe=MoEConfig(n_experts=4, k=2, d_expert=16)),
    "transcoder": FFNConfig(kind="transcoder", transcoder=TranscoderConfig(d_latent=48, k=4)),
}


def tiny_model(kind: str, vocab: int = 40, n_kv_heads: int | None = 2) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=vocab,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=n_kv_heads,
        max_seq_len=32,
        ffn=FFNS[kind],
    )
    return Transformer(cfg).eval()


def test_segment_positions_restart_per_segment():
    seg = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, 3], [0, 1, 1, 1, 1, 1, 2, 2, 2, 2]])
    want = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3, 0], [0, 0, 1, 2, 3, 4, 0, 1, 2, 3]])
    assert torch.equal(segment_positions(seg), want)


@pytest.mark.parametrize("kind", list(FFNS))
@pytest.mark.parametrize("hooked", [False, True])
def test_packed_row_logits_equal_each_example_alone(kind, hooked):
    model = tiny_model(kind)
    g = torch.Generator().manual_seed(1)
    lengths = [[5, 3, 9], [12, 6], [4]]
    examples = [[torch.randint(0, 40, (n,), generator=g) for n in row] for row in lengths]
    L = 20
    tokens = torch.zeros(len(lengths), L, dtype=torch.long)
    seg = torch.zeros_like(tokens)
    for i, row in enumerate(examples):
        n = sum(map(len, row))
        tokens[i, :n] = torch.cat(row)
        seg[i, :n] = torch.repeat_interleave(
            torch.arange(len(row)), torch.tensor(list(map(len, row)))
        )
        seg[i, n:] = len(row)  # the padding: a segment of its own
    patterns = []
    hooks = [("blocks.1.attn.hook_pattern", lambda x, hook: patterns.append(x))] if hooked else []
    with torch.no_grad(), model.hooks(hooks):
        packed = model(tokens, segment_ids=seg)
    for i, row in enumerate(examples):
        start = 0
        for ex in row:
            with torch.no_grad():
                alone = model(ex[None])[0]
            torch.testing.assert_close(
                packed[i, start : start + len(ex)], alone, atol=1e-5, rtol=1e-5
            )
            start += len(ex)
    if hooked:  # no attention across examples: the pattern is block-diagonal
        across = seg[:, None, :, None] != seg[:, None, None, :]
        assert patterns[0][across.expand_as(patterns[0])].abs().max() == 0


def test_segment_ids_refuse_a_cache_or_attention_mask():
    model = tiny_model("dense")
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="segment_ids"):
        model(
            tokens, attention_mask=torch.ones(1, 4), segment_ids=torch.zeros(1, 4, dtype=torch.long)
        )


# A small suite of every skill (IOI included, so the logit difference is compared too).
@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    cfg = DataConfig(
        n_train=2400,
        n_val=40,
        n_test=40,
        n_ood=20,
        cache_dir=str(tmp_path_factory.mktemp("data")),
    )
    return build_datasets(cfg), cfg


def _layouts(suite_data, rows, pack_length):
    """The same rows as one unpacked batch and as packed rows (in order)."""
    lengths = np.array([len(r["input_ids"]) for r in rows])
    bounds = next_fit(lengths, pack_length)
    packs = [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return (
        collate(rows, suite_data.pad_id),
        collate_packed(packs, pack_length, suite_data.pad_id),
        packs,
    )


def test_loss_and_skill_metrics_equal_on_packed_and_unpacked_batches(suite):
    data, _ = suite
    ds = data.splits["val"]
    rows = [ds[i] for i in range(len(ds))]
    unpacked, packed, packs = _layouts(data, rows, 64)
    assert len(packs) < len(rows) / 3  # several examples per row
    assert int(packed["attention_mask"].sum()) == int(unpacked["attention_mask"].sum())
    vocab = data.tokenizer.get_vocab_size()
    model = Transformer(
        ModelConfig(
            vocab_size=vocab, d_model=32, n_layers=2, n_heads=4, max_seq_len=64, ffn=FFNS["dense"]
        )
    ).eval()
    with torch.no_grad():
        lu = model(unpacked["input_ids"], attention_mask=unpacked["attention_mask"])
        lp = model(
            packed["input_ids"], positions=packed["position_ids"], segment_ids=packed["segment_ids"]
        )
    loss_u = masked_lm_loss(lu, unpacked["input_ids"], unpacked["loss_mask"])
    loss_p = masked_lm_loss(lp, packed["input_ids"], packed["loss_mask"])
    torch.testing.assert_close(loss_p, loss_u, atol=0, rtol=1e-5)

    # Metrics on logits with a known answer: per example, the true next token gets a
    # large logit except at a few random positions, so exact match varies by example.
    g = torch.Generator().manual_seed(0)
    per_example = []
    for r in rows:
        ids = torch.as_tensor(r["input_ids"])
        lg = torch.randn(len(ids), vocab, generator=g)
        right = torch.rand(len(ids) - 1, generator=g) > 0.15
        lg[torch.arange(len(ids) - 1)[right], ids[1:][right]] += 20.0
        per_example.append(lg)
    logits_u = torch.randn(*unpacked["input_ids"].shape, vocab, generator=g)
    for i, lg in enumerate(per_example):
        logits_u[i, : len(lg)] = lg
    logits_p = torch.randn(*packed["input_ids"].shape, vocab, generator=g)
    k = 0
    for i, pack in enumerate(packs):
        start = 0
        for _ in pack:
            logits_p[i, start : start + len(per_example[k])] = per_example[k]
            start += len(per_example[k])
            k += 1
    results = []
    for logits, batch in ((logits_u, unpacked), (logits_p, packed)):
        metric = SkillMetrics(data.skill_names, ioi_spec(data))
        metric.update(logits, batch)
        results.append(metric.compute())
    want, got = results
    assert set(got["skills"]) == set(want["skills"]) and len(want["skills"]) == 8
    assert 0.2 < np.mean([s["exact_match"] for s in want["skills"].values()]) < 0.9
    assert "logit_diff" in want["skills"]["ioi"]
    assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-9)
    for name, vals in want["skills"].items():
        assert got["skills"][name] == pytest.approx(vals, rel=1e-9), name


def test_sampler_covers_every_example_once_per_epoch_and_packs_fit(suite):
    data, _ = suite
    lengths = example_lengths(data.splits["train"])
    assert np.array_equal(lengths, [len(x) for x in data.splits["train"]["input_ids"]])
    sampler = PackedBatchSampler(lengths, 48, rows=3, seed=5)
    for epoch in (0, 1):
        packs = sampler.packs(epoch)
        assert sorted(np.concatenate(packs).tolist()) == list(range(len(lengths)))
        assert all(lengths[p].sum() <= 48 for p in packs)
        # next-fit: the next example would not have fitted in the row before it
        assert all(lengths[a].sum() + lengths[b[0]] > 48 for a, b in zip(packs, packs[1:]))
    assert not all(np.array_equal(a, b) for a, b in zip(sampler.packs(0), sampler.packs(1)))


def _stream(sampler, n_batches):
    it = iter(sampler)
    return [[p.tolist() for p in next(it)] for _ in range(n_batches)]


def test_sampler_resumes_and_shards_like_one_process(suite):
    data, _ = suite
    lengths = example_lengths(data.splits["train"])
    n_epoch_rows = len(PackedBatchSampler(lengths, 48, 3, seed=5).packs(0))
    n = n_epoch_rows  # batches of 4 rows: crosses into epochs 1 to 3
    full = _stream(PackedBatchSampler(lengths, 48, rows=4, seed=5), n)
    resumed = _stream(PackedBatchSampler(lengths, 48, rows=4, seed=5, start_batch=7), n - 7)
    assert resumed == full[7:]
    ranks = [
        _stream(PackedBatchSampler(lengths, 48, 2, seed=5, rank=r, world=2), n) for r in (0, 1)
    ]
    assert [a + b for a, b in zip(*ranks)] == full
    with pytest.raises(ConfigError, match="data.pack_length"):
        PackedBatchSampler(lengths, int(lengths.max()) - 1, 2, seed=0)


def test_datamodule_packs_the_train_split(suite):
    data, cfg = suite
    cfg = dataclasses.replace(cfg, pack_length=64, batch_size=4)
    dm = SuiteDataModule(cfg, seed=3)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 64)
    packs = next(iter(PackedBatchSampler(example_lengths(dm.suite.splits["train"]), 64, 4, seed=3)))
    ds = dm.suite.splits["train"]
    want = collate_packed([[ds[int(i)] for i in p] for p in packs], 64, data.pad_id)
    for key, value in want.items():
        assert torch.equal(batch[key], value), key
    assert torch.equal(PackedBatches(ds, 64, data.pad_id)[packs]["input_ids"], want["input_ids"])
    # val/test stay one example per row
    assert next(iter(dm.val_dataloader()[0]))["input_ids"].shape[0] == cfg.batch_size


def test_pack_length_config_errors():
    with pytest.raises(ConfigError, match="data.pack_length"):
        load_config("configs/dense.yaml", ["data.pack_length=-1"])
    with pytest.raises(ConfigError, match="block_size"):
        load_config(
            "configs/dense.yaml", ["data.source=text", "data.text.paths=[x]", "data.pack_length=64"]
        )


def test_a_packed_run_learns(tmp_path):
    cfg = load_config(
        "configs/dense.yaml",
        [
            "model.d_model=64",
            "model.ffn.d_ff=128",
            "model.max_seq_len=64",
            "data.mix={copy: 1, modadd: 0, reverse: 0, sort: 0, addition: 0, dyck: 0, facts: 0, ioi: 0}",
            "data.copy.n_values=16",
            "data.copy.max_len=5",
            "data.n_train=1000",
            "data.n_val=100",
            "data.n_test=100",
            "data.n_ood=50",
            "data.pack_length=64",
            "data.batch_size=4",
            "trainer.max_steps=60",
            "trainer.val_every_n_steps=60",
            "trainer.limit_val_batches=1",
            "trainer.progress_bar=false",
            "trainer.loggers=[csv]",
            "optim.warmup_steps=10",
            "run.eval_max_batches=2",
            f"data.cache_dir={tmp_path / 'data'}",
            f"run.out_dir={tmp_path / 'run'}",
        ],
    )
    export = train(cfg)
    metrics = json.loads((export / "metrics.json").read_text())
    vocab = load_pretrained(export).cfg.vocab_size
    assert metrics["val_loss"] < 0.5 * math.log(vocab), metrics
    # tokens trained are real tokens: at most 4 rows of 64 per step
    assert 0.8 * 60 * 4 * 64 < metrics["train"]["tokens"] <= 60 * 4 * 64
