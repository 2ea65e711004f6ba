"""The `tools:` section of a run config: whether generation and evaluation run
tool calls, and how the tool analysis measures them.

    tools:
      enabled: null            # null: when data.mix weighs a tool-call skill above 0
      calculator_max_digits: 1000
      error_text: error
      length_factors: [2, 4]
      eval_examples: 128
      counterfactual_numbers: offset

A model trained on the tool-call skills (`addition_tool`, `facts_tool`) calls its
tools; one trained without them generates plainly, so `enabled: null` (the
default) follows the data. The registry the calls are answered by is built from
the data config (training.data.skills.tool_call.suite_registry), so the lookup
tool reads the same knowledge graph the data was generated from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from glassbox.archs.config import ConfigError


@dataclass
class ToolsConfig:
    # run tool calls in generation and evaluation; null: when the data mixes a
    # tool-call skill (addition_tool, facts_tool) with a weight above 0
    enabled: bool | None = None
    calculator_max_digits: int = 1000  # the calculator refuses any number longer than this
    error_text: str = "error"  # forced inside <result> .. </result> when a call fails
    # length generalisation: additions with both operands k * data.addition.max_digits long
    length_factors: list[int] = field(default_factory=lambda: [2, 4])
    eval_examples: int = 128  # examples per skill, and per length, in the tool analysis
    # counterfactual reliance: what replaces a calculator result. offset: the true
    # result plus a random nonzero offset of at most 10^(d-1), d digits kept |
    # uniform: any other d-digit number (analysis.tools.Injector)
    counterfactual_numbers: str = "offset"


def validate_tools_config(cfg: ToolsConfig, prefix: str = "tools") -> None:
    """Raise ConfigError (key, value, what is allowed) for an impossible value."""
    if cfg.calculator_max_digits <= 0:
        raise ConfigError(
            f"{prefix}.calculator_max_digits", cfg.calculator_max_digits, "a positive integer"
        )
    if not cfg.error_text.strip():
        raise ConfigError(f"{prefix}.error_text", cfg.error_text, "a word of the vocabulary")
    for k in cfg.length_factors:
        if k < 1:
            raise ConfigError(f"{prefix}.length_factors", list(cfg.length_factors), "each >= 1")
    if cfg.counterfactual_numbers not in ("offset", "uniform"):
        raise ConfigError(
            f"{prefix}.counterfactual_numbers", cfg.counterfactual_numbers, "one of offset, uniform"
        )
    if cfg.eval_examples <= 0:
        raise ConfigError(f"{prefix}.eval_examples", cfg.eval_examples, "a positive integer")
