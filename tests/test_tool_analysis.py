"""The tool analysis on scripted models whose behaviour, hence every score, is known:
a model that calls with the right arguments and copies the result (precision,
recall, argument accuracy and reliance 1); one that calls but answers from its own
computation (reliance 0, unharmed by a withheld result); one that calls everywhere
(precision = the share of prompts that need a call); one that garbles the facts
arguments (argument accuracy = the share of additions). The scripted model is a
real Transformer whose forward returns the logits a policy chooses from the tokens
it was fed, so it sees a forced result only if generation fed it back."""

from __future__ import annotations

import random

import pytest
import torch

from glassbox.analysis.tools import Case, Injector, cases_from_split, run_cases, tool_report
from glassbox.archs import ModelConfig, Transformer
from glassbox.archs.tools.config import ToolsConfig
from glassbox.training.data import build_datasets, data_config_from_dict, knowledge_graph
from glassbox.training.data.skills import SKILLS

TOOL_MIX = ("addition_tool", "facts_tool", "copy")
PLAIN_MIX = ("addition", "facts", "copy")


def make_cfg(tmp_path, skills, **kw):
    d = dict(
        mix={name: float(name in skills) for name in SKILLS},
        n_train=150,
        n_val=24,
        n_test=36,
        n_ood=12,
        facts={"n_entities": 8, "relations": ["city", "colour"]},
        cache_dir=str(tmp_path / "cache"),
    )
    d.update(kw)
    return data_config_from_dict(d)


class Scripted(Transformer):
    """policy(words fed so far) -> next word."""

    def __init__(self, tokenizer, policy):
        super().__init__(
            ModelConfig(
                vocab_size=tokenizer.get_vocab_size(),
                d_model=8,
                n_layers=1,
                n_heads=2,
                max_seq_len=160,
            )
        )
        self.tok = tokenizer
        self.words = {i: w for w, i in tokenizer.get_vocab().items()}
        self.policy = policy
        self.history: list[list[str]] = []

    def forward(self, tokens, attention_mask=None, positions=None, cache=None):
        B, T = tokens.shape
        if cache is None or cache.length == 0:
            self.history = [[] for _ in range(B)]
        mask = attention_mask[:, -T:] if attention_mask is not None else torch.ones_like(tokens)
        for b in range(B):
            self.history[b] += [self.words[int(t)] for t, m in zip(tokens[b], mask[b]) if m]
        if cache is not None:
            cache.length += T
        logits = torch.full((B, T, self.cfg.vocab_size), -1e4)
        for b in range(B):
            logits[b, -1, self.tok.token_to_id(self.policy(self.history[b]))] = 0.0
        return logits


def own_answer(prompt: list[str], kg) -> list[str]:
    """What a model that computes by itself answers (no reversed numbers here)."""
    if "+" in prompt:
        i = prompt.index("+")
        return list(str(int("".join(prompt[1:i])) + int("".join(prompt[i + 1 : -1]))))
    entity, relation = (prompt[1], prompt[2]) if prompt[2] != "of" else (prompt[3], prompt[1])
    return [kg.attribute(entity, relation)]


def call_words(prompt: list[str], garble_facts: bool = False) -> list[str]:
    if "+" in prompt:
        return ["<call>", "calculator", *prompt[1:-1], "</call>"]
    entity, relation = (prompt[1], prompt[2]) if prompt[2] != "of" else (prompt[3], prompt[1])
    args = [relation, entity] if garble_facts else [entity, relation]
    return ["<call>", "lookup", *args, "</call>"]


def agent(kg, *, copy_result=True, call_always=False, garble_facts=False, use_tools=True):
    """A policy over the suite's prompts (addition, facts, copy)."""

    def policy(words: list[str]) -> str:
        prompt = words[: words.index("=") + 1]
        gen = words[len(prompt) :]
        tool_prompt = prompt[1] not in ("copy", "rev", "sort", "mod")
        if not use_tools:
            answer = own_answer(prompt, kg) if tool_prompt else prompt[2:-1]
            return answer[len(gen)] if len(gen) < len(answer) else "<eos>"
        if not tool_prompt and not call_always:
            answer = prompt[2:-1]  # copies the list: right on copy
            return answer[len(gen)] if len(gen) < len(answer) else "<eos>"
        if "</result>" not in gen:
            script = call_words(prompt, garble_facts) if tool_prompt else ["<call>", "calculator", "1", "+", "1", "</call>"]  # fmt: skip
            return script[len(gen)] if len(gen) < len(script) else "<eos>"
        r0 = len(gen) - 1 - gen[::-1].index("<result>")
        r1 = len(gen) - 1 - gen[::-1].index("</result>")
        after = gen[r1 + 1 :]
        answer = gen[r0 + 1 : r1] if copy_result or not tool_prompt else own_answer(prompt, kg)
        return answer[len(after)] if len(after) < len(answer) else "<eos>"

    return policy


@pytest.fixture(scope="module")
def tool_setup(tmp_path_factory):
    cfg = make_cfg(tmp_path_factory.mktemp("tool"), TOOL_MIX)
    return cfg, build_datasets(cfg), knowledge_graph(cfg)


TOOLS = ToolsConfig(eval_examples=12, length_factors=[2, 4])


def report_of(setup, **policy_kw):
    cfg, suite, kg = setup
    model = Scripted(suite.tokenizer, agent(kg, **policy_kw))
    return tool_report(model, suite, data_cfg=cfg, tools=TOOLS, batch_size=16)


def test_cases_cut_prompts_at_the_call_and_keep_the_expected_call(tool_setup):
    cfg, suite, kg = tool_setup
    tok = suite.tokenizer
    cases = cases_from_split(suite, "test", per_skill=5)
    assert {c.skill for c in cases} == set(TOOL_MIX)
    for c in cases:
        prompt = tok.decode(c.prompt, skip_special_tokens=False).split()
        answer = tok.decode(c.answer, skip_special_tokens=False).split()
        assert prompt[0] == "<bos>" and prompt[-1] == "="
        if c.skill == "addition_tool":
            assert c.call == "calculator " + " ".join(prompt[1:-1])
            assert answer == own_answer(prompt, kg)
        elif c.skill == "facts_tool":
            assert c.call.split()[0] == "lookup" and answer == own_answer(prompt, kg)
        else:
            assert c.call is None and answer == prompt[2:-1]


def test_a_model_that_calls_right_and_copies_the_result(tool_setup):
    rep = report_of(tool_setup)
    s = rep["summary"]
    assert rep["uses_tools"]
    assert s["interp.call_precision"] == 1.0 and s["interp.call_recall"] == 1.0
    assert s["interp.argument_accuracy"] == 1.0
    assert s["interp.tool_reliance"] == 1.0
    assert s["tools.counterfactual_follows_true"] == 0.0
    assert s["tools.exact_match"] == 1.0
    assert s["tools.exact_match_withheld"] == 0.0  # nothing to copy
    assert s["tools.addition_2x"] == 1.0 and s["tools.addition_4x"] == 1.0
    assert rep["lengths"]["4x"]["digits"] == 12 and rep["lengths"]["4x"]["called"] == 1.0
    assert rep["lengths"]["4x"]["forced_call"] == {"argument_accuracy": 1.0, "exact_match": 1.0}
    assert s["tools.facts_accuracy"] == 1.0 and s["tools.facts_accuracy_train"] == 1.0
    assert rep["skills"]["copy"]["exact_match"] == 1.0 and rep["skills"]["copy"]["called"] == 0
    n = rep["skills"]
    assert rep["counts"]["n_needed"] == n["addition_tool"]["n"] + n["facts_tool"]["n"]
    assert rep["counts"]["counterfactual"] == rep["counts"]["n_needed"]
    assert "calculator" in rep["traces"][0] or "lookup" in rep["traces"][0]


def test_a_model_that_computes_by_itself(tool_setup):
    s = report_of(tool_setup, copy_result=False)["summary"]
    assert s["interp.call_precision"] == 1.0 and s["interp.call_recall"] == 1.0
    assert s["interp.tool_reliance"] == 0.0
    assert s["tools.counterfactual_follows_true"] == 1.0
    assert s["tools.exact_match"] == 1.0 and s["tools.exact_match_withheld"] == 1.0


def test_a_model_that_calls_everywhere(tool_setup):
    rep = report_of(tool_setup, call_always=True)
    s, n = rep["summary"], rep["skills"]
    needed = n["addition_tool"]["n"] + n["facts_tool"]["n"]
    assert s["interp.call_precision"] == pytest.approx(needed / (needed + n["copy"]["n"]))
    assert s["interp.call_recall"] == 1.0 and n["copy"]["exact_match"] == 0.0


def test_a_model_that_garbles_the_lookup_arguments(tool_setup):
    rep = report_of(tool_setup, garble_facts=True)
    s, n = rep["summary"], rep["skills"]
    additions = n["addition_tool"]["n"]
    assert s["interp.argument_accuracy"] == pytest.approx(
        additions / (additions + n["facts_tool"]["n"])
    )
    # the lookup fails ('error' is forced), the copied 'error' is no attribute
    assert s["tools.facts_accuracy"] == 0.0 and n["addition_tool"]["exact_match"] == 1.0


def test_a_dense_model_without_tools(tmp_path):
    cfg = make_cfg(tmp_path, PLAIN_MIX)
    suite = build_datasets(cfg)
    model = Scripted(suite.tokenizer, agent(knowledge_graph(cfg), use_tools=False))
    rep = tool_report(model, suite, data_cfg=cfg, tools=TOOLS, batch_size=16)
    s = rep["summary"]
    assert not rep["uses_tools"]
    assert s["interp.call_precision"] is None and s["interp.tool_reliance"] is None
    assert s["tools.exact_match"] == 1.0 and s["tools.addition_2x"] == 1.0
    assert s["tools.facts_accuracy"] == 1.0 and s["tools.exact_match_withheld"] is None
    # a model that stops at once gets nothing right
    zero = Scripted(suite.tokenizer, lambda w: "<eos>")
    s0 = tool_report(zero, suite, data_cfg=cfg, tools=TOOLS, batch_size=16)["summary"]
    assert s0["tools.exact_match"] == 0.0 and s0["tools.addition_4x"] == 0.0


def test_run_cases_reads_answers_after_the_result(tool_setup):
    cfg, suite, kg = tool_setup
    tok = suite.tokenizer
    ids = lambda text: [tok.token_to_id(w) for w in text.split()]  # noqa: E731
    case = Case("addition_tool", ids("<bos> 1 2 + 3 ="), ids("1 5"), "calculator 1 2 + 3")
    from glassbox.training.data.skills.tool_call import suite_registry

    model = Scripted(tok, agent(kg))
    (out,) = run_cases(model, tok, [case], suite_registry(cfg))
    assert out.called and out.call_text == "calculator 1 2 + 3" and out.finished
    assert out.answer == ids("1 5") and out.correct(case.answer)
    assert out.calls[0].result.value == 15
    with pytest.raises(ValueError, match="needs a ToolRegistry"):
        run_cases(model, tok, [case], None, mode="execute")


def test_length_diagnostics_tell_a_missed_call_from_a_bad_copy(tool_setup):
    """A model that only calls on prompts as short as it was trained on (operands of
    up to 3 digits) but copies any length once the call is opened for it."""
    cfg, suite, kg = tool_setup
    right = agent(kg)

    def shy(words):
        prompt = words[: words.index("=") + 1]
        if len(prompt) > 9 and words[len(prompt) :][:1] != ["<call>"]:
            return "<eos>"
        return right(words)

    rep = tool_report(Scripted(suite.tokenizer, shy), suite, data_cfg=cfg, tools=TOOLS)
    two = rep["lengths"]["2x"]
    assert two["called"] == 0.0 and two["exact_match"] == 0.0 and two["argument_accuracy"] is None
    assert two["forced_call"] == {"argument_accuracy": 1.0, "exact_match": 1.0}
    assert rep["summary"]["tools.addition_exact_match"] == 1.0


@pytest.mark.parametrize("numbers", ["offset", "uniform"])
def test_injected_values_differ_from_the_truth_and_keep_its_shape(tool_setup, numbers):
    from glassbox.archs.tools import ToolResult
    from glassbox.training.data.skills.tool_call import suite_registry

    cfg, suite, kg = tool_setup
    registry = suite_registry(cfg)
    inj = Injector(registry, kg, seed=3, numbers=numbers)
    rng = random.Random(0)
    for case in range(300):
        true = rng.choice(
            [0, 7, rng.randint(10, 99), rng.randint(1000, 1998), -rng.randint(10, 99)]
        )
        value = inj(case, ToolResult("calculator", "x", true, str(true)))
        assert value != true and len(str(abs(value))) == len(str(abs(true)))
        assert (value < 0) == (true < 0)
        if numbers == "offset" and abs(true) >= 10:
            assert abs(value - true) <= 10 ** (len(str(abs(true))) - 1)
        assert inj(case, ToolResult("calculator", "x", true, str(true))) is None  # once per case
        assert inj.injected[case] == registry.get("calculator").format(value)
    entity, relation = kg.entities[0], kg.relations[1]
    true = kg.attribute(entity, relation)
    other = inj(999, ToolResult("lookup", f"{entity} {relation}", true, true))
    assert other != true and other in kg.values(relation)
    assert inj(1000, ToolResult("lookup", "x y", error="unknown")) is None
