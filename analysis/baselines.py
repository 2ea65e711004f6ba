"""What an interpretability score would be without learning: the two baselines every
score is printed beside (docs/design.md, "Scores that mean something").

- Untrained twin: the same config at the same seed, at initialisation
  (`untrained_twin`), scored by the same code on the same tokens.
- Token identity: what the current token alone predicts.
  * Coverage: per binary ground-truth feature, the best F1 of a predictor that sees
    only the token id (`token_f1`): token ids ranked by P(feature | token) on the
    analysis tokens, the best cut of that ranking, computed exactly.
  * Expert / cluster specialisation: the same NMI and purity for a routing that is a
    function of the token alone (`token_routing`: each token id sent to the k groups
    the model itself sends it to most often).

A feature is lexical when the token alone predicts it (token F1 >= LEXICAL_F1 = 0.9:
`dyck.is_open`, an operand digit's value...) and contextual otherwise (carry bits,
bracket depth, sort rank, is_repeat, IOI roles...). The headline coverage is over
contextual features only, as a normalised lift over the token predictor:

    coverage_lift = mean over contextual g of (F1_unit[g] - F1_token[g]) / (1 - F1_token[g])

1 when some unit reads each contextual feature perfectly, 0 when the best unit is
no better than the token id, negative when it is worse (not clipped: an untrained
network's units are a noisy function of the token and usually score below it).

    python -m glassbox.analysis.baselines --skills-md   # the lexical / contextual table
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from glassbox.analysis.batches import real_tokens, suite_batches
from glassbox.analysis.coverage import ground_truth_labels
from glassbox.analysis.jsonable import jsonable
from glassbox.analysis.resume import part
from glassbox.analysis.routing_metrics import contingency, mean_purity, nmi
from glassbox.archs.transformer import Transformer
from glassbox.training.data import DataConfig, SuiteData, build_datasets

LEXICAL_F1 = 0.9  # a feature the token id alone predicts with F1 >= this is lexical

# ------------------------------------------------------------------ token identity


@dataclass
class TokenPredictor:
    """Per feature, the set of token ids on which a token-only predictor says "true":
    ids (V,) the distinct ids it was fitted on, keep (V, G) bool, and f1 (G,) its F1
    on the tokens it was fitted on."""

    ids: Tensor
    keep: Tensor
    f1: Tensor

    def predict(self, tokens: Tensor) -> Tensor:
        """(N, G) bool: the prediction at tokens (N,); an id never seen is "false"."""
        if self.ids.numel() == 0:
            return torch.zeros(tokens.shape[0], self.keep.shape[1], dtype=torch.bool)
        pos = torch.searchsorted(self.ids, tokens).clamp_max(self.ids.numel() - 1)
        return self.keep[pos] & (self.ids[pos] == tokens)[:, None]


@torch.no_grad()
def fit_token_predictor(
    tokens: Tensor, labels: Tensor, not_applicable: str = "negative"
) -> TokenPredictor:
    """The best token-only predictor of every feature, by F1 on these tokens.

    tokens (N,) ids; labels (N, G) 1 true, 0 false, -1 not applicable (counted as
    negative, as coverage does by default; "exclude" scores only where it applies).
    The predictor says "true" on a set of token ids; the best set is a prefix of the
    ids ranked by P(feature | token) (a cut between tied ratios is not allowed: a
    threshold on P(feature | token) keeps ties together). Exact, every cut at once:
    O(N G + V G log V) for V distinct ids. F1 0 (an empty set) for a feature with no
    positive.
    """
    uniq, inv = tokens.unique(return_inverse=True)
    V, G = uniq.numel(), labels.shape[1]
    pos = (labels == 1).double()
    p = torch.zeros(V, G, dtype=torch.float64).index_add_(0, inv, pos)  # (V, G) positives
    if not_applicable == "exclude":
        n = torch.zeros(V, G, dtype=torch.float64).index_add_(0, inv, (labels >= 0).double())
    else:
        n = torch.bincount(inv, minlength=V).double()[:, None].expand(V, G)
    ratio = torch.where(n > 0, p / n.clamp_min(1), torch.full_like(p, -1.0))
    r_sorted, order = ratio.sort(dim=0, descending=True, stable=True)
    tp = p.gather(0, order).cumsum(0)  # (V, G): predicting the first j + 1 ids
    pp = n.gather(0, order).cumsum(0)
    n_pos = p.sum(0)  # (G,)
    f1 = 2 * tp / (pp + n_pos).clamp_min(1)
    # a cut after id j is allowed only where the next id has a lower ratio (or none)
    cut = torch.ones(V, G, dtype=torch.bool)
    cut[:-1] = r_sorted[:-1] > r_sorted[1:]
    f1 = torch.where(cut, f1, torch.zeros_like(f1))
    best, j = f1.max(0) if V else (torch.zeros(G, dtype=torch.float64), torch.zeros(G).long())
    rank = torch.empty_like(order)
    rank.scatter_(0, order, torch.arange(V)[:, None].expand(V, G).contiguous())
    keep = (rank <= j[None]) & (best[None] > 0)
    return TokenPredictor(uniq, keep, best.clamp_min(0))


def token_f1(tokens: Tensor, labels: Tensor, not_applicable: str = "negative") -> Tensor:
    """(G,) float64: per feature, the best F1 of a predictor of the token id alone,
    on these tokens (fit_token_predictor's f1: chosen and scored on the same tokens)."""
    return fit_token_predictor(tokens, labels, not_applicable).f1


@dataclass
class FeatureSplit:
    """The ground-truth features of some tokens, split by what the token alone
    predicts: names (G,), token_f1 (G,), lexical (G,) bool (token_f1 >= LEXICAL_F1)."""

    names: list[str]
    token_f1: Tensor
    lexical: Tensor

    @property
    def contextual(self) -> Tensor:
        return ~self.lexical

    def kind(self, g: int) -> str:
        return "lexical" if bool(self.lexical[g]) else "contextual"


def feature_split(
    tokens: Tensor, labels: Tensor, names: Sequence[str], not_applicable: str = "negative"
) -> FeatureSplit:
    """token_f1 of every feature and the lexical / contextual split at LEXICAL_F1."""
    f1 = token_f1(tokens, labels, not_applicable)
    return FeatureSplit(list(names), f1, f1 >= LEXICAL_F1)


def _mean(x: Tensor) -> float | None:
    return float(x.double().mean()) if x.numel() else None


def normalised_lift(unit_f1: Tensor, token: Tensor) -> Tensor:
    """(F1_unit - F1_token) / (1 - F1_token), elementwise (token F1 < 1)."""
    return (unit_f1.double() - token.double()) / (1 - token.double()).clamp_min(1e-12)


def split_coverage(best_f1: Tensor, split: FeatureSplit) -> dict[str, float | None]:
    """The coverage of a set of units (best_f1 (G,), analysis.coverage's per-feature
    best F1) on lexical and contextual features, and the contextual lift:
    coverage_lexical (mean best F1, lexical), coverage_contextual (mean best F1,
    contextual), coverage_lift (mean normalised lift, contextual). None where a
    side has no feature."""
    lex, ctx = split.lexical, split.contextual
    return {
        "coverage_lexical": _mean(best_f1[lex]),
        "coverage_contextual": _mean(best_f1[ctx]),
        "coverage_lift": _mean(normalised_lift(best_f1[ctx], split.token_f1[ctx])),
    }


def token_coverage(split: FeatureSplit) -> dict[str, float | None]:
    """The token predictor's own coverage, all / lexical / contextual features."""
    f1 = split.token_f1
    return {
        "coverage": _mean(f1),
        "coverage_lexical": _mean(f1[split.lexical]),
        "coverage_contextual": _mean(f1[split.contextual]),
    }


def token_routing(indices: Tensor, tokens: Tensor, n_groups: int) -> Tensor:
    """(N, k) a routing that is a function of the token alone: every occurrence of a
    token id goes to the k groups (experts, clusters) that `indices` (N, k) sends
    that id to most often (ties: the lower group id)."""
    k = indices.shape[1]
    uniq, inv = tokens.unique(return_inverse=True)
    counts = torch.zeros(uniq.numel(), n_groups, dtype=torch.float64)
    counts.index_put_(
        (inv.repeat_interleave(k), indices.reshape(-1).long()),
        torch.ones(inv.numel() * k, dtype=torch.float64),
        accumulate=True,
    )
    # a tiny decreasing offset makes topk's tie-break the lower group id
    tie = torch.arange(n_groups, dtype=torch.float64) * 1e-9
    table = (counts - tie).topk(k, dim=1).indices  # (V, k)
    return table[inv]


def routing_scores(indices: Tensor, skill: Tensor, n_groups: int, n_skills: int) -> dict:
    """The skill NMI (arithmetic and label-normalised) and purity of a routing (N, k),
    as analysis.specialisation.layer_metrics computes them."""
    counts = contingency(indices, skill, n_groups, n_skills)
    return {
        "nmi_skill": nmi(counts),
        "nmi_skill_label_norm": nmi(counts, normalization="label"),
        "mean_purity": mean_purity(counts),
    }


# ------------------------------------------------------------------ untrained twin


def untrained_twin(model: Transformer, seed: int) -> Transformer:
    """The model `glassbox train` started from at run.seed = `seed`: the same config
    built after torch.manual_seed(seed) (training.train seeds with
    L.seed_everything(run.seed) and draws nothing from torch's generator before it
    builds the model), on the model's device, in eval mode. The global generator is
    left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        twin = Transformer(model.cfg)
    twin.tokenizer = getattr(model, "tokenizer", None)
    return twin.to(model.device).eval()


def with_untrained_twin(
    report_of: Callable[[Any, Any], dict[str, Any]],
    model: Transformer,
    out_dir: Any,
    init_seed: int,
    prefixes: tuple[str, ...] = ("interp.",),
) -> dict[str, Any]:
    """report_of(model, out_dir) of `model` and of its untrained twin (`untrained_twin` at
    init_seed, the run's training seed; its plots are not written: out_dir None), by the
    same code on the same tokens: the twin's summary keys starting with `prefixes` join
    the model's as baselines.init.<key>, its whole report is under "untrained_twin";
    JSON-safe."""
    # two parts, saved apart where scoring saves parts (analysis.resume)
    report = part("trained", lambda: report_of(model, out_dir))
    init = part("twin", lambda: report_of(untrained_twin(model, init_seed), None))
    twin = {f"baselines.init.{k}": v for k, v in init["summary"].items() if k.startswith(prefixes)}
    report["summary"].update(twin)
    report["untrained_twin"] = {"init_seed": init_seed, **init}
    return jsonable(report)


# ------------------------------------------------------------ the suite's features


def suite_feature_split(
    suite: SuiteData,
    split: str = "val",
    n_examples: int = 512,
    seed: int = 0,
    max_tokens: int = 20_000,
) -> FeatureSplit:
    """The lexical / contextual split of the suite's ground-truth features on the
    tokens `glassbox analyze` reads (the same sample of `split`, the same labels as
    analysis.interp.coverage_scores), from the data alone."""
    batches = suite_batches(suite, split, n_examples, seed=seed)
    toks, feats, skills = [], [], []
    for b in batches:
        m = real_tokens(b["input_ids"], b.get("attention_mask"))
        toks.append(b["input_ids"][m])
        feats.append(b["features"][m])
        skills.append(b["skill"][m])
    cut = slice(0, max_tokens)
    tokens, features, skill = (torch.cat(x)[cut] for x in (toks, feats, skills))
    labels, names = ground_truth_labels(
        features, suite.feature_names, suite.feature_kinds, skill, suite.skill_names
    )
    return feature_split(tokens, labels, names)


def skills_md_table(split: FeatureSplit) -> str:
    """A markdown table: feature, token-identity F1, lexical / contextual."""
    lines = ["| feature | token-identity F1 | kind |", "|---|---|---|"]
    for g, name in enumerate(split.names):
        lines.append(f"| `{name}` | {float(split.token_f1[g]):.2f} | {split.kind(g)} |")
    n_lex = int(split.lexical.sum())
    lines.append("")
    lines.append(f"{n_lex} lexical, {len(split.names) - n_lex} contextual.")
    return "\n".join(lines)


def default_skills_table(cache_dir: str | None = None) -> str:
    """skills_md_table at the default data config and `glassbox analyze`'s defaults
    (512 val examples, seed 0)."""
    cfg = DataConfig() if cache_dir is None else DataConfig(cache_dir=cache_dir)
    return skills_md_table(suite_feature_split(build_datasets(cfg)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m glassbox.analysis.baselines", description=__doc__)
    p.add_argument(
        "--skills-md", action="store_true", help="print SKILLS.md's lexical / contextual table"
    )
    p.add_argument("--cache-dir", default=None, help="data cache (default: the config's)")
    args = p.parse_args(argv)
    if not args.skills_md:
        p.print_help()
        return 2
    print(default_skills_table(args.cache_dir))
    return 0


__all__ = [
    "LEXICAL_F1",
    "FeatureSplit",
    "TokenPredictor",
    "default_skills_table",
    "feature_split",
    "fit_token_predictor",
    "normalised_lift",
    "routing_scores",
    "skills_md_table",
    "split_coverage",
    "suite_feature_split",
    "token_coverage",
    "token_f1",
    "token_routing",
    "untrained_twin",
]

if __name__ == "__main__":
    raise SystemExit(main())
