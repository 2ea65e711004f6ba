"""The sections of analysis.mechanistic that read the skill suite's ground truth:
linear probes of every variable of `suite.feature_names`, ROME's causal tracing on
the `facts` skill, and activation patching on the `ioi` skill (what each measures:
analysis.mechanistic's docstring). Each takes the model, the suite, the
`MechanisticConfig`, the folder its plots go to and the list of plots written, and
returns its section of the report."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from glassbox.analysis.batches import to_device, token_batch
from glassbox.analysis.causal_tracing import causal_trace, plot_causal_trace
from glassbox.analysis.ioi import corrupt_ioi, logit_diff, logit_diff_metric
from glassbox.analysis.logit_lens import lens_labels
from glassbox.analysis.mechanistic_config import (
    MechanisticConfig,
    record_plot,
    sample_rows,
    token_labels,
)
from glassbox.analysis.patching import (
    ffn_layers_with,
    patch_experts,
    patch_heads,
    patch_latents,
    patch_residual,
    plot_patching,
)
from glassbox.analysis.plots import heatmap
from glassbox.analysis.probes import fit_probe
from glassbox.training.data import collate

# --- probes -----------------------------------------------------------------------------


def _collect(model, rows: list[dict], hooks: list[str], batch_size: int, pad_id: int):
    """Activations of `hooks` at every real token of `rows`: (N, len(hooks), d),
    with the tokens' features (N, F) and example index (N,)."""
    acts, feats, example = [], [], []
    for start in range(0, len(rows), batch_size):
        batch = to_device(collate(rows[start : start + batch_size], pad_id), model.device)
        ids, att = token_batch(batch)
        _, cache = model.run_with_cache(ids, attention_mask=att, names_filter=hooks)
        real = att.bool()
        acts.append(torch.stack([cache[h][real].float().cpu() for h in hooks], 1))
        feats.append(batch["features"][real].cpu())
        ex = torch.arange(start, start + len(real))[:, None].expand(real.shape)
        example.append(ex[real.cpu()])
    return torch.cat(acts), torch.cat(feats), torch.cat(example)


def _probe_variable(A: Tensor, Fe: Tensor, G: Tensor, f: int, cfg: MechanisticConfig):
    """Probe variable f (column of Fe) at every hook of A (N, hooks, d), at the
    tokens where it applies and its value is common enough; groups G (N,) keep an
    example's tokens on one side of the split. Returns a list of per-hook
    ProbeResult dicts, or the reason it was skipped (a str)."""
    keep = Fe[:, f] >= 0
    labels = Fe[keep, f]
    values, counts = labels.unique(return_counts=True)
    common = values[counts >= cfg.probe_min_class_count]
    sel = keep.nonzero().flatten()[torch.isin(labels, common)]
    if len(common) < 2 or len(sel) < cfg.probe_min_tokens or len(G[sel].unique()) < 8:
        return (
            f"{len(sel)} tokens in {len(common)} classes seen >= "
            f"{cfg.probe_min_class_count} times, over {len(G[sel].unique())} examples"
        )
    y, groups = Fe[sel, f], G[sel]
    with _one_thread():
        return [
            fit_probe(
                A[sel, i], y, groups=groups, seed=cfg.seed, max_iter=cfg.probe_max_iter
            ).to_dict()
            for i in range(A.shape[1])
        ]


def _plot_probes(results: dict, layers: list[str], out: Path, plots: list[str]) -> None:
    names = list(results)
    for key in ("selectivity", "accuracy"):
        grid = torch.tensor(
            [[results[n]["by_layer"][layer][key] for layer in layers] for n in names]
        )
        record_plot(
            heatmap,
            out / f"probes_{key}.png",
            plots,
            values=grid,
            title=f"Linear probes: {key} (residual stream)",
            xlabel="layer",
            ylabel="variable",
            xticklabels=layers,
            yticklabels=names,
            diverging=False,
            vmin=0.0 if key == "accuracy" else None,
            vmax=1.0,
        )


def probes_section(model, suite, cfg: MechanisticConfig, out: Path, plots) -> dict:
    """Probe every variable after every layer, at the tokens it describes, on up
    to `probe_max_examples` examples of its own skill."""
    hooks = ["hook_embed"] + [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]
    layers = lens_labels(model.cfg.n_layers, include_embed=True)
    results: dict = {}
    skipped: dict[str, str] = {}
    for sid, skill in enumerate(suite.skill_names):
        cols = [
            (f, name)
            for f, name in enumerate(suite.feature_names)
            if name.split(".")[0] == skill
            and (cfg.probe_features is None or name in cfg.probe_features)
        ]
        if not cols:
            continue
        rows = sample_rows(
            suite, cfg.split, cfg.probe_max_examples, cfg.seed, keep=lambda s, sid=sid: s == sid
        )
        if len(rows) < 4:
            skipped.update(
                {name: f"{len(rows)} {skill} examples in {cfg.split}" for _, name in cols}
            )
            continue
        A, Fe, G = _collect(model, rows, hooks, cfg.batch_size, suite.pad_id)
        for f, name in cols:
            by_layer = _probe_variable(A, Fe, G, f, cfg)
            if isinstance(by_layer, str):
                skipped[name] = by_layer
                continue
            best = max(range(len(layers)), key=lambda i: by_layer[i]["selectivity"])
            results[name] = {
                "by_layer": dict(zip(layers, by_layer)),
                "best_layer": layers[best],
                "accuracy": by_layer[best]["accuracy"],
                "selectivity": by_layer[best]["selectivity"],
                "majority": by_layer[best]["majority"],
            }
    if results:
        _plot_probes(results, layers, out, plots)
    return {"hook_points": hooks, "layers": layers, "variables": results, "skipped": skipped}


@contextmanager
def _one_thread():
    """Fit the probes on one CPU thread: each is thousands of tiny ops, which
    several threads only slow down (by 10x and more on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# --- causal tracing on facts ---------------------------------------------------------------


def _facts_layouts(rows: list[dict], f_entity: int, f_phrasing: int) -> dict[tuple[int, int], list]:
    """Facts prompts grouped by layout, (phrasing, answer position): per prompt its
    tokens before the answer, the subject's position and the answer token."""
    layouts: dict[tuple[int, int], list] = {}
    for r in rows:
        ids = torch.as_tensor(r["input_ids"])
        ans = int(torch.as_tensor(r["answer_mask"]).nonzero()[0])
        feats = torch.as_tensor(r["features"])
        subject = int((feats[:, f_entity] >= 0).nonzero()[0])
        phrasing = int(feats[ans, f_phrasing])
        layouts.setdefault((phrasing, ans), []).append((ids[:ans], subject, int(ids[ans])))
    return layouts


def _trace_hooks(model, tokens, subject, answers, labels, key, cfg, out, plots) -> dict:
    """ROME traces of the hidden state, MLP and attention outputs of one layout,
    with the (layer, token) whose MLP output restores the most."""
    entry: dict = {}
    for hook in ("resid_post", "mlp_out", "attn_out"):
        t = causal_trace(
            model,
            tokens,
            subject,
            answers,
            hook=hook,
            n_samples=cfg.trace_samples,
            seed=cfg.seed,
        )
        entry[hook] = {
            "indirect_effect": t.indirect_effect.tolist(),
            "p_clean": t.p_clean,
            "p_corrupted": t.p_corrupted,
        }
        record_plot(
            plot_causal_trace,
            out / f"trace_facts_{key}_{hook}.png",
            plots,
            trace=t,
            token_labels=labels,
        )
        if hook == "mlp_out":  # where restoring one MLP output helps most
            ie = t.indirect_effect
            layer, pos = divmod(int(ie.argmax()), ie.shape[1])
            entry["mlp_peak"] = {
                "layer": layer,
                "token": labels[pos],
                "effect": float(ie.max()),
            }
    return entry


def facts_section(model, suite, cfg: MechanisticConfig, out: Path, plots) -> dict:
    fid = suite.skill_names.index("facts")
    rows = sample_rows(
        suite, cfg.facts_split, 8 * cfg.n_trace_prompts, cfg.seed, keep=lambda s: s == fid
    )
    layouts = _facts_layouts(
        rows, suite.feature_names.index("facts.entity"), suite.feature_names.index("facts.phrasing")
    )
    result: dict = {}
    for (phrasing, length), items in sorted(layouts.items()):
        tokens = torch.stack([t for t, _, _ in items]).to(model.device)
        answers = torch.tensor([a for _, _, a in items], device=model.device)
        subject = torch.zeros(tokens.shape, dtype=torch.bool, device=model.device)
        subject[torch.arange(len(items)), torch.tensor([s for _, s, _ in items])] = True
        right = model(tokens)[:, -1].argmax(-1) == answers
        known = float(right.float().mean())
        pick = right if int(right.sum()) >= 2 else torch.ones_like(right)
        tokens, answers, subject = tokens[pick], answers[pick], subject[pick]
        n = min(len(tokens), cfg.n_trace_prompts)
        tokens, answers, subject = tokens[:n], answers[:n], subject[:n]
        key = f"phrasing{phrasing}"
        key = key if key not in result else f"{key}_len{length}"
        labels = token_labels(suite.tokenizer, tokens[0].tolist())
        labels = [t + "*" if subject[0, i] else t for i, t in enumerate(labels)]
        entry: dict = {
            "n_prompts": n,
            "known_fraction": known,
            "tokens": labels,
            "traced_known_only": bool(int(right.sum()) >= 2),
        }
        entry |= _trace_hooks(model, tokens, subject, answers, labels, key, cfg, out, plots)
        entry["total_effect"] = entry["resid_post"]["p_clean"] - entry["resid_post"]["p_corrupted"]
        result[key] = entry
    return result


# --- IOI ----------------------------------------------------------------------------------


def _ioi_prompts(rows: list[dict], col: dict[str, int]) -> tuple[list, list[int]]:
    """The prompts of the commonest layout (end position), each (tokens up to the
    end, IO token, S token), and every name token seen (the corruption pool)."""
    prompts: dict[int, list] = {}
    for r in rows:
        ids, feats = torch.as_tensor(r["input_ids"]), torch.as_tensor(r["features"])
        real = feats[:, col["io_token"]] >= 0
        first = int(real.nonzero()[0])
        end = int(feats[first, col["end_pos"]])
        io, s = int(feats[first, col["io_token"]]), int(feats[first, col["s_token"]])
        prompts.setdefault(end, []).append((ids[: end + 1], io, s))
    pool = sorted({x for items in prompts.values() for _, io, s in items for x in (io, s)})
    return max(prompts.values(), key=len), pool


def _ioi_patching_runs(model, clean, corrupted, metric, cfg: MechanisticConfig) -> dict:
    """{name: a call returning a PatchingResult}: heads, the residual stream and
    attention and MLP outputs by position, every expert (MoE layers) and the
    latents that change most (transcoder layers)."""
    runs = {
        "heads": lambda: patch_heads(model, clean, corrupted, metric),
        "resid_pre": lambda: patch_residual(model, clean, corrupted, metric, hook="resid_pre"),
        "attn_out": lambda: patch_residual(model, clean, corrupted, metric, hook="attn_out"),
        "mlp_out": lambda: patch_residual(model, clean, corrupted, metric, hook="mlp_out"),
    }
    if ffn_layers_with(model, "hook_expert_weights"):
        runs["experts"] = lambda: patch_experts(model, clean, corrupted, metric)
    for layer in ffn_layers_with(model, "hook_latents"):
        latents = _top_changed_latents(model, clean, corrupted, layer, cfg.max_latents)
        if latents:
            runs[f"latents_{layer}"] = lambda layer=layer, latents=latents: patch_latents(
                model, clean, corrupted, metric, layer, latents=latents
            )
    return runs


def ioi_section(model, suite, cfg: MechanisticConfig, out: Path, plots) -> dict:
    sid = suite.skill_names.index("ioi")
    col = {n: suite.feature_names.index(f"ioi.{n}") for n in ("io_token", "s_token", "end_pos")}
    rows = sample_rows(suite, cfg.split, 4 * cfg.n_ioi, cfg.seed, keep=lambda s: s == sid)
    if not rows:
        return {"skipped": f"no ioi example in split {cfg.split!r}"}
    items, pool = _ioi_prompts(rows, col)
    items = items[: cfg.n_ioi]
    dev = model.device
    clean = torch.stack([t for t, _, _ in items]).to(dev)
    io = torch.tensor([i for _, i, _ in items], device=dev)
    s = torch.tensor([x for _, _, x in items], device=dev)
    result: dict = {
        "n_prompts": len(items),
        "tokens": token_labels(suite.tokenizer, clean[0].tolist()),
    }
    ld = logit_diff(model(clean), io, s)
    result["logit_diff"] = float(ld.mean())
    result["accuracy"] = float((ld > 0).float().mean())
    if len(pool) < 4:
        result["skipped_patching"] = "fewer than four names to corrupt with"
        return result
    corrupted = corrupt_ioi(
        clean.cpu(), io.cpu(), s.cpu(), mode="abc", name_ids=pool, seed=cfg.seed
    ).to(dev)
    metric = logit_diff_metric(io, s)
    result["logit_diff_corrupted"] = float(metric(model(corrupted)))
    if result["logit_diff"] == result["logit_diff_corrupted"]:
        result["skipped_patching"] = "the corruption does not change the logit difference"
        return result
    for name, run in _ioi_patching_runs(model, clean, corrupted, metric, cfg).items():
        res = run()
        entry = {"scores": res.scores.tolist(), "dims": list(res.dims)} | (
            {"labels": res.labels} if res.labels else {}
        )
        result[name] = entry
        xt = result["tokens"] if res.dims[-1] == "pos" else None
        record_plot(
            plot_patching,
            out / f"ioi_patch_{name}.png",
            plots,
            result=res,
            title=f"IOI: patching {name} (clean -> ABC-corrupted)",
            xticklabels=xt,
        )
    heads = torch.tensor(result["heads"]["scores"])
    top = int(heads.abs().argmax())
    result["top_head"] = f"{top // heads.shape[1]}.{top % heads.shape[1]}"
    result["top_head_score"] = float(heads.flatten()[top])
    return result


def _top_changed_latents(model, clean, corrupted, layer: int, n: int) -> list[int]:
    """The n latents whose activations differ most (mean |clean - corrupted|)."""
    name = f"blocks.{layer}.mlp.hook_latents"
    _, a = model.run_with_cache(clean, names_filter=[name])
    _, b = model.run_with_cache(corrupted, names_filter=[name])
    diff = (a[name] - b[name]).abs().float().flatten(0, -2).mean(0)
    order = diff.argsort(descending=True)
    return sorted(order[: min(n, int((diff > 0).sum()))].tolist())


__all__ = ["facts_section", "ioi_section", "probes_section"]
