"""circuit-tracer itself beside glassbox's exact graphs, on the same prompts.

One side: circuit-tracer 0.5.0's `attribute` on the shipped dense checkpoint, read from
its TransformerLens export (`glassbox export glassbox/dense --to transformer-lens DIR`),
with glassbox's post-hoc transcoders (analysis.posthoc's fit: TopK, 1,024 latents,
k = 16, 300 steps on 4,096 train examples) written in circuit-tracer's transcoder
format and read back by its own loader. The other: glassbox's exact graph
(analysis.graphs.trace) of the shipped transcoder checkpoint, which has no error nodes.
The prompts are the report's graph prompts (analysis.graphs.scores.graph_prompts: two
val examples per skill, cut before the answer, the answer's first token the traced
logit). Per prompt it prints circuit-tracer's error share (the error nodes' share of
the logit's absolute direct attribution, as analysis.graphs.prune.graph_stats defines
it) and its own 1 - replacement score (the error nodes' share of the influence), its
replacement model's top-1 agreement with the model, the unit and error nodes that carry
80% of the influence (nodes and edges pruned at 0.8, as graph_stats does) and its
seconds; then glassbox's error share, completeness error, nodes and seconds.
circuit-tracer traces its own target, the logit minus the mean logit (a demeaned
unembedding column); glassbox the logit itself. A second table is the parity check:
circuit-tracer given the raw logit (a CustomTarget) against glassbox's trace of the
dense model with the same post-hoc transcoders (their errors as nodes), edge by edge on
the nodes both have. It writes circuit-tracer's graph file for one prompt and
glassbox's for the same prompt, and validates both against circuit-tracer's schema
(circuit_tracer.frontend.graph_models.Model).

What circuit-tracer's loader takes, and what not (printed by the script too):
- the model: `ReplacementModel.from_pretrained*` wants a TransformerLens model name
  (its config comes from the hub); given the export's folder it stops at
  transformer_lens/loading_from_pretrained.py:120 ("... not found. Valid official model
  names ..."). A local model goes through `ReplacementModel.from_config` with a
  HookedTransformerConfig built here from the export's config.json (TL's own Llama
  mapping), then the export's weights converted by TL's `convert_llama_weights`.
  circuit-tracer 0.5.0 subclasses TL 3's HookedTransformer, so glassbox's in-memory TL
  export (`to_transformer_lens`, a TL >= 4 TransformerBridge) is not there in its
  environment (ModuleNotFoundError at archs/export/transformer_lens.py:92); the
  exported folder (an HF Llama) it takes.
- the transcoders: `load_transcoder_set` reads them (layer_{i}.safetensors with
  W_enc (d_latent, d_model), W_dec, b_enc, b_dec), but its file format has no TopK:
  `load_relu_transcoder` makes every transcoder without a JumpReLU threshold a ReLU
  one (all positive pre-activations active). The script swaps in TopK-then-ReLU
  (glassbox's activation) after loading; its own `TopK` leaves out the ReLU.
- circuit-tracer zeroes the features and errors of position 0 (the <bos> it expects
  there): the MLP outputs at <bos> become constants of its graph, not nodes.

Not run in CI: circuit-tracer 0.5.0 pins transformers <= 4.57.3 and huggingface-hub
< 1.0, while the `peers` extra brings transformers 5.x (and transformer-lens >= 4,
which circuit-tracer's HookedTransformer subclass cannot use). It runs in a virtualenv
of its own, made from the repository root (torch pinned: a CPU build, no CUDA wheels):

    python3.11 -m venv ../ct-venv
    ../ct-venv/bin/pip install torch==2.13.0
    ../ct-venv/bin/pip install torch==2.13.0 circuit-tracer==0.5.0
    ../ct-venv/bin/pip install torch==2.13.0 "transformers<=4.57.3" "huggingface-hub<1.0" \\
        lightning torchmetrics datasets tokenizers omegaconf safetensors matplotlib rich \\
        tensorboard
    ../ct-venv/bin/pip install --no-deps -e .
    OMP_NUM_THREADS=1 ../ct-venv/bin/python benchmarks/circuit_tracer_side_by_side.py

(circuit-tracer brings transformer-lens 3.2.1 and transformers 4.57.3.) --out
(default build/circuit_tracer_side_by_side) keeps the export, the transcoders in
circuit-tracer's format (a rerun loads them instead of fitting) and both graph files.
Results: docs/results/circuit_tracer_side_by_side.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from importlib.metadata import version
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from glassbox.analysis.batches import suite_batches  # noqa: E402
from glassbox.analysis.graphs.export import write_graph  # noqa: E402
from glassbox.analysis.graphs.graph import trace  # noqa: E402
from glassbox.analysis.graphs.prune import graph_stats  # noqa: E402
from glassbox.analysis.graphs.scores import GRAPH_MAX_NODES, graph_prompts  # noqa: E402
from glassbox.analysis.posthoc import FIT_EXAMPLES  # noqa: E402
from glassbox.archs.checkpoint import load_pretrained, resolve_checkpoint  # noqa: E402
from glassbox.archs.config import TranscoderConfig  # noqa: E402
from glassbox.archs.export.transformer_lens import export_transformer_lens  # noqa: E402
from glassbox.archs.transcoder import Transcoder  # noqa: E402
from glassbox.training.evaluate import load_suite_for  # noqa: E402
from glassbox.training.transcoder_fit import fit_transcoders  # noqa: E402

# the post-hoc fit of configs/compare_shipped.yaml (posthoc:) and analysis.posthoc
FIT = {"steps": 300, "d_latent": 1024, "k": 16, "seed": 0}
HOOK_IN, HOOK_OUT = "mlp.hook_in", "mlp.hook_out"  # circuit-tracer's ReplacementMLP hooks
FRACTION = 0.8  # nodes and edges pruned at the same fraction, as graph_stats does


class TopKReLU(torch.nn.Module):
    """glassbox's TopK (archs.transcoder): the k largest pre-activations, ReLU'd."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, pre: torch.Tensor) -> torch.Tensor:  # (..., d_latent)
        vals, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, vals.relu())


# ----------------------------------------------------------------- the post-hoc side
def posthoc_transcoders(dense, suite, out: Path) -> tuple[dict[int, Transcoder], float | None]:
    """The dense model's post-hoc transcoders ({layer: Transcoder}), fitted as
    analysis.posthoc fits them, or read back from out/transcoders (circuit-tracer's
    format, written at the first run). Returns them and the fit's seconds (None when read)."""
    cfg = TranscoderConfig(d_latent=FIT["d_latent"], k=FIT["k"], activation="topk")
    folder = out / "transcoders"
    layers = list(range(dense.cfg.n_layers))
    if all((folder / f"layer_{i}.safetensors").is_file() for i in layers):
        from safetensors.torch import load_file

        tcs = {}
        for i in layers:
            w = load_file(str(folder / f"layer_{i}.safetensors"))
            tc = Transcoder(dense.cfg.d_model, cfg)
            weights = {"W_enc": w["W_enc"].T, "W_dec": w["W_dec"], "b_enc": w["b_enc"]}
            tc.load_state_dict({**tc.state_dict(), **weights, "b_dec": w["b_dec"]})
            tcs[i] = tc.eval()
        return tcs, None
    t0 = time.perf_counter()
    batches = suite_batches(suite, "train", FIT_EXAMPLES, batch_size=32, seed=FIT["seed"])
    tcs = fit_transcoders(dense, batches, layers, cfg, max_steps=FIT["steps"], seed=FIT["seed"])
    seconds = time.perf_counter() - t0
    folder.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    for i, tc in tcs.items():
        # circuit-tracer's SingleLayerTranscoder.to_safetensors layout: W_enc (d_latent, d_model)
        save_file(
            {"W_enc": tc.W_enc.detach().T.contiguous(), "W_dec": tc.W_dec.detach().contiguous(),
             "b_enc": tc.b_enc.detach().contiguous(), "b_dec": tc.b_dec.detach().contiguous()},
            str(folder / f"layer_{i}.safetensors"),
        )  # fmt: skip
    return tcs, seconds


def circuit_tracer_model(export_dir: Path, tc_dir: Path, n_layers: int, k: int):
    """circuit-tracer's TransformerLens ReplacementModel of the exported dense model with
    the transcoders in tc_dir, through its own loader (see the module docstring)."""
    from circuit_tracer import ReplacementModel
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights
    from transformers import AutoTokenizer, LlamaForCausalLM

    tcs = load_transcoder_set(
        {i: str(tc_dir / f"layer_{i}.safetensors") for i in range(n_layers)},
        scan="glassbox/dense post-hoc transcoders",
        feature_input_hook=HOOK_IN,
        feature_output_hook=HOOK_OUT,
        device=torch.device("cpu"),
        lazy_encoder=False,
        lazy_decoder=False,
    )
    act = tcs[0].activation_function
    loaded_as = getattr(act, "__name__", type(act).__name__)
    for tc in tcs:
        tc.activation_function = TopKReLU(k)  # the file format knows ReLU and JumpReLU only
    hf = LlamaForCausalLM.from_pretrained(str(export_dir)).eval()
    c = hf.config
    # TransformerLens 3's own LlamaForCausalLM mapping (loading_from_pretrained), which
    # from_pretrained reaches only through a hub model name
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size, d_head=c.hidden_size // c.num_attention_heads,
        n_heads=c.num_attention_heads, d_mlp=c.intermediate_size,
        n_layers=c.num_hidden_layers, n_ctx=c.max_position_embeddings, eps=c.rms_norm_eps,
        d_vocab=c.vocab_size, act_fn=c.hidden_act,
        n_key_value_heads=(c.num_key_value_heads
                           if c.num_key_value_heads != c.num_attention_heads else None),
        normalization_type="RMS", positional_embedding_type="rotary",
        rotary_adjacent_pairs=False, rotary_dim=c.hidden_size // c.num_attention_heads,
        rotary_base=float(getattr(c, "rope_theta", 10000.0)), final_rms=True, gated_mlp=True,
        original_architecture="LlamaForCausalLM", model_name="glassbox-dense",
        tokenizer_name=str(export_dir), device="cpu", dtype=torch.float32,
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(str(export_dir))
    model = ReplacementModel.from_config(cfg, tcs, backend="transformerlens", tokenizer=tokenizer)
    state = convert_llama_weights(hf, cfg)
    # from_config wrapped the MLPs and the unembedding (ReplacementMLP, ReplacementUnembed)
    state = {
        k.replace(".mlp.", ".mlp.old_mlp.").replace("unembed.", "unembed.old_unembed."): v
        for k, v in state.items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    # the transcoders are loaded already; the attention buffers (mask, rotary tables) were
    # made by the constructor
    buffers = (".mask", ".rotary_sin", ".rotary_cos", ".IGNORE")
    missing = [m for m in missing if not m.startswith("transcoders.") and not m.endswith(buffers)]
    if missing or unexpected:
        raise RuntimeError(f"TL state dict: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval(), loaded_as


def _where(e: BaseException) -> str:
    """The file:line (from site-packages or the repository) and line an exception came from."""
    frame = traceback.extract_tb(e.__traceback__)[-1]
    name = Path(frame.filename)
    parts = name.parts
    short = (
        "/".join(parts[parts.index("site-packages") + 1 :])
        if "site-packages" in parts
        else str(name.relative_to(ROOT))
        if name.is_relative_to(ROOT)
        else name.name
    )
    return f"{short}:{frame.lineno}: {frame.line}"


def direct_routes(dense, export_dir: Path, tc_dir: Path) -> None:
    """The two routes that do not work, each tried and its error printed: circuit-tracer's
    own loader on the exported directory, and glassbox's in-memory TL export."""
    from circuit_tracer import ReplacementModel
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set

    from glassbox.archs.export.transformer_lens import to_transformer_lens

    tcs = load_transcoder_set(
        {i: str(tc_dir / f"layer_{i}.safetensors") for i in range(dense.cfg.n_layers)},
        scan="glassbox", feature_input_hook=HOOK_IN, feature_output_hook=HOOK_OUT,
        device=torch.device("cpu"), lazy_encoder=False, lazy_decoder=False,
    )  # fmt: skip
    tries = {
        "ReplacementModel.from_pretrained_and_transcoders(<the export's folder>, ...)": lambda: (
            ReplacementModel.from_pretrained_and_transcoders(
                str(export_dir), tcs, device=torch.device("cpu")
            )
        ),
        "glassbox's to_transformer_lens(dense) (a TransformerBridge)": lambda: to_transformer_lens(
            dense
        ),
    }
    for what, attempt in tries.items():
        try:
            attempt()
            print(f"{what}: loaded")
        except Exception as e:  # what the route says, printed, then the working route
            print(f"{what}: {type(e).__name__}: {str(e)[:120]}")
            print(f"    at {_where(e)}")


@torch.no_grad()
def replacement_top1(model, ids: torch.Tensor) -> int:
    """The top token at the last position of circuit-tracer's model with every MLP
    replaced by its transcoder (no error terms, every position): its replacement model."""
    mlp_in: dict[int, torch.Tensor] = {}

    def keep(acts, hook, layer):
        mlp_in[layer] = acts

    def replace(acts, hook, layer):
        return model.transcoders[layer](mlp_in[layer])

    hooks = []
    for i in range(model.cfg.n_layers):
        hooks.append((f"blocks.{i}.{HOOK_IN}", lambda a, hook, i=i: keep(a, hook, i)))
        hooks.append((f"blocks.{i}.{HOOK_OUT}", lambda a, hook, i=i: replace(a, hook, i)))
    logits = model.run_with_hooks(ids[None], fwd_hooks=hooks)
    return int(logits[0, -1].argmax())


def circuit_tracer_stats(graph, n_layers: int) -> dict[str, float]:
    """error_share, nodes_80, and circuit-tracer's replacement and completeness scores of
    one circuit-tracer Graph (one logit target)."""
    from circuit_tracer.graph import compute_graph_scores, prune_graph

    A = graph.adjacency_matrix
    n_feat, T = len(graph.selected_features), len(graph.input_tokens)
    err = slice(n_feat, n_feat + n_layers * T)
    row = A[-1].abs()
    pruned = prune_graph(graph, FRACTION, FRACTION)
    replacement, completeness = compute_graph_scores(graph)
    return {
        "features": float(n_feat),
        "error_share": float(row[err].sum() / row.sum().clamp(min=1e-30)),
        "nodes_80": float(pruned.node_mask[: err.stop].sum()),
        "error_influence": 1.0 - replacement,
        "completeness_score": completeness,
    }


# ---------------------------------------------------------------------------- the run
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="build/circuit_tracer_side_by_side", type=Path)
    ap.add_argument("--per-skill", type=int, default=2, help="graph prompts per skill")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    versions = {p: version(p) for p in ("circuit-tracer", "transformer-lens", "transformers",
                                        "huggingface-hub", "torch")}  # fmt: skip
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions.items()))

    dense = load_pretrained("glassbox/dense").eval()
    tc_model = load_pretrained("glassbox/transcoder").eval()
    suite, _ = load_suite_for(resolve_checkpoint("glassbox/dense"), dense)
    prompts = graph_prompts(suite, args.per_skill, seed=0)
    tcs, fit_seconds = posthoc_transcoders(dense, suite, out)
    print(
        f"post-hoc transcoders: {FIT}; "
        + (f"fitted in {fit_seconds:.0f} s" if fit_seconds else f"read from {out}/transcoders")
    )

    export_dir = out / "dense_tl"
    if not (export_dir / "config.json").is_file():
        export_transformer_lens(dense, export_dir, force=True)
    direct_routes(dense, export_dir, out / "transcoders")
    try:
        ct, loaded_as = circuit_tracer_model(
            export_dir, out / "transcoders", dense.cfg.n_layers, FIT["k"]
        )
    except Exception as e:  # say where circuit-tracer's loader stops, still run glassbox's side
        print(f"circuit-tracer could not load the model: {type(e).__name__}: {e}")
        print(f"    at {_where(e)}")
        ct, loaded_as = None, None
    if ct is not None:
        print(f"circuit-tracer's load_transcoder_set read the TopK transcoders as {loaded_as}; "
              "swapped for TopK-then-ReLU (k = 16)")  # fmt: skip
        probe = torch.tensor(prompts[0].ids)
        diff = (ct(probe[None])[0] - dense(probe[None])[0]).abs().max()
        print(f"logits, circuit-tracer's TL model vs glassbox's dense: max |diff| {diff:.2e}")

    rows = [side_by_side(n, p, dense, tc_model, tcs, ct, out) for n, p in enumerate(prompts)]
    print_tables(rows, ct is not None)
    validate(out / "graphs", ct is not None)
    (out / "side_by_side.json").write_text(
        json.dumps(
            {"versions": versions, "fit": FIT, "fit_seconds": fit_seconds, "rows": rows}, indent=1
        )  # fmt: skip
    )
    return 0


def side_by_side(n: int, p, dense, tc_model, tcs, ct, out: Path) -> dict:
    """One prompt's row: circuit-tracer's graph (ct_*), glassbox's exact graph of the
    transcoder model (gb_*), and the parity of circuit-tracer with glassbox on the same
    post-hoc transcoders, both tracing the raw logit (ph_*)."""
    ids = torch.tensor(p.ids)
    row: dict = {"skill": p.skill, "tokens": len(p.ids)}
    g_ph = trace(dense, p.ids, target=p.target, replacements=tcs, max_nodes=GRAPH_MAX_NODES)
    s_ph = graph_stats(g_ph)
    row.update(ph_error_share_all=s_ph["error_share"], ph_agreement=s_ph["agreement"],
               ph_nodes_80=s_ph["nodes_80"])  # fmt: skip
    if ct is not None:
        from circuit_tracer import attribute
        from circuit_tracer.attribution.targets import CustomTarget

        t0 = time.perf_counter()
        # circuit-tracer's own target: the logit minus the mean logit (demeaned unembedding)
        g_ct = attribute(ids, ct, attribution_targets=torch.tensor([p.target]),
                         batch_size=256, max_feature_nodes=GRAPH_MAX_NODES)  # fmt: skip
        row["ct_seconds"] = time.perf_counter() - t0
        row.update({f"ct_{k}": v for k, v in circuit_tracer_stats(g_ct, ct.cfg.n_layers).items()})
        model_top = int(dense(ids[None])[0, -1].argmax())
        row["ct_agreement"] = float(replacement_top1(ct, ids) == model_top)
        if n == 0:
            from circuit_tracer.utils.create_graph_files import create_graph_files

            create_graph_files(g_ct, "circuit_tracer", str(out / "graphs"), node_threshold=0.8)
        # the raw logit, glassbox's target: the two graphs should then be one
        raw = CustomTarget(str(p.target), float(g_ct.logit_probabilities[0]),
                           ct.unembed.W_U[:, p.target].detach().clone())  # fmt: skip
        g_raw = attribute(ids, ct, attribution_targets=[raw], batch_size=256,
                          max_feature_nodes=GRAPH_MAX_NODES)  # fmt: skip
        row.update({f"ph_{k}": v for k, v in parity(g_raw, g_ph).items()})
    t0 = time.perf_counter()
    g_gb = trace(tc_model, p.ids, target=p.target, max_nodes=GRAPH_MAX_NODES)
    row["gb_seconds"] = time.perf_counter() - t0
    s = graph_stats(g_gb)
    row.update(gb_error_share=s["error_share"], gb_logit_rel_error=s["logit_rel_error"],
               gb_nodes_80=s["nodes_80"], gb_units=s["unit_nodes"])  # fmt: skip
    if n == 0:
        write_graph(g_gb, out / "graphs", "glassbox")
    return row


def parity(g_ct, g_gb) -> dict[str, float]:
    """circuit-tracer's graph against glassbox's of the same model, transcoders and logit,
    on the nodes both have: every feature, error and embedding past position 0 (circuit-
    tracer has no features or errors at position 0), the embedding at 0, the logit.
    rel_diff: max |A_ct - A_gb| over those nodes' edges / max |A_gb|; the error shares of
    the logit row over those sources; missing: glassbox units past position 0 that
    circuit-tracer has no node for."""
    T, L = len(g_gb.token_ids), len(g_gb.meta["kinds"])
    n_feat = len(g_ct.selected_features)
    feats = g_ct.active_features[g_ct.selected_features].tolist()  # (layer, pos, feature)
    gb_index = {
        key: i
        for i, key in enumerate(
            zip(g_gb.layers.tolist(), g_gb.positions.tolist(), g_gb.units.tolist())
        )  # fmt: skip
    }
    ct_idx, gb_idx = [], []
    for i, key in enumerate(feats):
        ct_idx.append(i)
        gb_idx.append(gb_index[tuple(key)])
    n_shared_feats = len(ct_idx)
    err = g_gb.error_slice().start
    for j, layer in enumerate(g_gb.error_layers):
        for pos in range(1, T):
            ct_idx.append(n_feat + layer * T + pos)
            gb_idx.append(err + j * T + pos)
    n_with_err = len(ct_idx)
    ct_idx += [n_feat + L * T + pos for pos in range(T)] + [g_ct.adjacency_matrix.shape[0] - 1]
    gb_idx += [g_gb.embed_slice().start + pos for pos in range(T)] + [g_gb.n_nodes - 1]
    a_ct = g_ct.adjacency_matrix[ct_idx][:, ct_idx].float()
    a_gb = g_gb.adjacency[gb_idx][:, gb_idx].float()
    errs = slice(n_shared_feats, n_with_err)

    def share(a):
        row = a[-1].abs()
        return float(row[errs].sum() / row.sum().clamp(min=1e-30))

    return {
        "rel_diff": float((a_ct - a_gb).abs().max() / a_gb.abs().max()),
        "error_share_ct": share(a_ct),
        "error_share_gb": share(a_gb),
        "missing": float(int((g_gb.positions > 0).sum()) - n_shared_feats),
    }


def print_tables(rows: list[dict], with_ct: bool) -> None:
    mean, med = statistics.fmean, statistics.median

    def table(title: str, columns: list[tuple[str, str, str, str]]) -> None:
        """columns: (header, row key, format, pooling: mean | median | sum | max)."""
        pools = {"mean": mean, "median": med, "sum": sum, "max": max}
        print(f"\n{title}\n")
        print("| # | skill | tokens | " + " | ".join(c[0] for c in columns) + " |")
        print("|---|---|---|" + "---|" * len(columns))
        for n, r in enumerate(rows):
            cells = [format(r[key], fmt) for _, key, fmt, _ in columns]
            print(f"| {n + 1} | {r['skill']} | {r['tokens']} | " + " | ".join(cells) + " |")
        pooled = [  # a mean of 0/1 rows gets decimals
            f"{format(pools[pool]([r[key] for r in rows]), '.3f' if pool == 'mean' else fmt)}"
            f" ({pool})"
            for _, key, fmt, pool in columns
        ]
        print("| | **all** | | " + " | ".join(pooled) + " |")

    gb = [
        ("gb error share", "gb_error_share", ".3f", "mean"),
        ("gb completeness error", "gb_logit_rel_error", ".1e", "max"),
        ("gb nodes80", "gb_nodes_80", ".0f", "median"),
        ("gb s", "gb_seconds", ".2f", "sum"),
    ]
    if not with_ct:
        table("glassbox's exact graphs of checkpoints/transcoder", gb)
        return
    ct = [
        ("ct error share", "ct_error_share", ".3f", "mean"),
        ("ct 1 - replacement score", "ct_error_influence", ".3f", "mean"),
        ("ct top-1", "ct_agreement", ".0f", "mean"),
        ("ct nodes80", "ct_nodes_80", ".0f", "median"),
        ("ct s", "ct_seconds", ".2f", "sum"),
    ]
    table("circuit-tracer on checkpoints/dense + post-hoc transcoders (ct, its demeaned "
          "logit) | glassbox's exact graph of checkpoints/transcoder (gb)", ct + gb)  # fmt: skip
    table(
        "parity: circuit-tracer (raw logit) and glassbox tracing the same post-hoc "
        "transcoders in checkpoints/dense, on the nodes both have (past position 0)",
        [
            ("max rel. edge diff", "ph_rel_diff", ".1e", "max"),
            ("ct error share", "ph_error_share_ct", ".3f", "mean"),
            ("gb error share", "ph_error_share_gb", ".3f", "mean"),
            ("gb error share, <bos> in", "ph_error_share_all", ".3f", "mean"),
            ("gb top-1", "ph_agreement", ".0f", "mean"),
            ("gb nodes80", "ph_nodes_80", ".0f", "median"),
            ("units missing", "ph_missing", ".0f", "max"),
        ],
    )


def validate(graphs: Path, with_ct: bool) -> None:
    """Both graph files against circuit-tracer's schema (its pydantic Model)."""
    from circuit_tracer.frontend.graph_models import Model

    for slug in ("circuit_tracer", "glassbox") if with_ct else ("glassbox",):
        data = json.loads((graphs / f"{slug}.json").read_text())
        parsed = Model(**data)
        ids = {node.node_id for node in parsed.nodes}
        dangling = sum(link["source"] not in ids or link["target"] not in ids
                       for link in parsed.links)  # fmt: skip
        print(f"{graphs / slug}.json: valid against circuit_tracer.frontend.graph_models.Model "
              f"({len(parsed.nodes)} nodes, {len(parsed.links)} links, {dangling} dangling)")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
