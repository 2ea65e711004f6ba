"""What every section of analysis.mechanistic shares: its sizes
(`MechanisticConfig`), the rows it reads (drawn by the analysis's one sampler), the
tokens' labels on its plots, and the list of plots it writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from glassbox.analysis.batches import sample_indices


@dataclass
class MechanisticConfig:
    split: str = "val"  # examples for the logit lens, head scores, probes and IOI
    n_examples: int = 512  # examples drawn from `split` (all skills together)
    batch_size: int = 64  # examples per forward pass
    probe_max_examples: int = 256  # examples of each skill for its variables' probes
    probe_min_class_count: int = 5  # label values seen fewer times are left out
    probe_min_tokens: int = 60  # a variable on fewer tokens (or < 8 examples) is skipped
    probe_max_iter: int = 100  # L-BFGS steps per probe
    probe_features: Optional[list[str]] = None  # variables to probe; None = every one
    facts_split: str = "train"  # facts are traced where the model learnt them
    n_trace_prompts: int = 16  # prompts per facts layout
    trace_samples: int = 5  # noise draws per traced prompt
    n_ioi: int = 32  # IOI prompts patched
    max_latents: int = 32  # transcoder latents patched per layer (those changing most)
    induction_seq_len: int = 20  # length of the repeated random sequence
    seed: int = 0


def sample_rows(suite, split: str, n: int, seed: int, keep=None) -> list[dict]:
    """Up to n rows of a split drawn by the analysis's one sampler
    (analysis.batches.sample_indices); `keep(example_skill)` filters by skill."""
    ds = suite.splits[split]
    return [ds[i] for i in sample_indices(suite, split, n, seed, keep=keep)]


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """Each token id as its token (the id itself without a tokenizer)."""
    if tokenizer is None:
        return [str(i) for i in ids]
    return [tokenizer.id_to_token(i) or str(i) for i in ids]


def record_plot(fig_fn, path: Path, plots: list[str], **kw) -> None:
    """Draw `fig_fn` into `path` and add its file name to `plots`."""
    fig_fn(path=path, **kw)
    plots.append(path.name)


__all__ = ["MechanisticConfig", "record_plot", "sample_rows", "token_labels"]
