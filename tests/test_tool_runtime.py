"""The tool-calling generation loop with a scripted model: calls at different steps
in one batch, calls opened in the prompt, malformed calls, and the withheld and
counterfactual modes. The scripted model is a real (tiny) Transformer whose forward
returns logits chosen by a policy over the tokens it has been fed, so it only
knows a forced result if generation really fed it back."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from glassbox.archs import ModelConfig, Transformer
from glassbox.archs.tools import (
    Calculator,
    CallMarkers,
    Lookup,
    Tool,
    ToolError,
    ToolRegistry,
    format_trace,
    generate_with_tools,
)
from glassbox.archs.tools.runtime import ToolForcer

WORDS = (
    "<pad> <unk> <call> </call> <result> </result> <eos> = Q A calculator lookup error "
    "+ - * / % ( ) 0 1 2 3 4 5 6 7 8 9 paris country france mayor search junk"
).split()
VOCAB = {w: i for i, w in enumerate(WORDS)}
EOS = VOCAB["<eos>"]


def make_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<call>", "</call>", "<result>", "</result>", "<eos>"])
    return tok


TOKENIZER = make_tokenizer()


def ids(text: str) -> list[int]:
    return [VOCAB[w] for w in text.split()]


def words(tokens) -> str:
    return " ".join(WORDS[int(t)] for t in tokens)


class ScriptedModel(Transformer):
    """policy(seq, history) -> next token id, where history is every real token the
    model was fed for that sequence (prompt, sampled and forced tokens)."""

    def __init__(self, policy, vocab_size: int = len(VOCAB), max_seq_len: int = 96):
        cfg = ModelConfig(
            vocab_size=vocab_size, d_model=8, n_layers=1, n_heads=2, max_seq_len=max_seq_len
        )
        super().__init__(cfg)
        self.policy = policy
        self.history: list[list[int]] = []

    def forward(self, tokens, attention_mask=None, positions=None, cache=None):
        B, T = tokens.shape
        if cache is None or cache.length == 0:
            self.history = [[] for _ in range(B)]
        mask = attention_mask[:, -T:] if attention_mask is not None else torch.ones_like(tokens)
        for b in range(B):
            self.history[b] += [int(t) for t, m in zip(tokens[b], mask[b]) if m]
        if cache is not None:
            cache.length += T
        logits = torch.full((B, T, self.cfg.vocab_size), -1e4)
        for b in range(B):
            logits[b, -1, self.policy(b, self.history[b])] = 0.0
        return logits


def scripted(prompts: list[str], scripts: list[str]):
    """A model that says scripts[b] word by word after prompts[b] (whatever was
    forced in between), then <eos>."""
    plens = [len(p.split()) for p in prompts]
    plans = [ids(s) for s in scripts]

    def policy(b, history):
        step = len(history) - plens[b]
        return plans[b][step] if step < len(plans[b]) else EOS

    return ScriptedModel(policy)


def copier(b, history):
    """Asks 'calculator 1 2 + 3 4', then copies whatever came back inside
    <result> ... </result> after an '='."""
    call = ids("<call> calculator 1 2 + 3 4 </call>")
    if VOCAB["</result>"] not in history:
        n = len(history) - 1  # prompt is one word
        return call[n] if n < len(call) else VOCAB["junk"]
    r0 = len(history) - 1 - history[::-1].index(VOCAB["<result>"])
    r1 = len(history) - 1 - history[::-1].index(VOCAB["</result>"])
    answer = history[r0 + 1 : r1]
    after = history[r1 + 1 :]
    if not after:
        return VOCAB["="]
    return answer[len(after) - 1] if len(after) - 1 < len(answer) else EOS


REGISTRY = ToolRegistry([Calculator(), Lookup({"paris": {"country": "france"}})])


def run(model, prompts, **kwargs):
    kwargs.setdefault("max_new_tokens", 40)
    return generate_with_tools(
        model, [ids(p) for p in prompts], TOKENIZER, REGISTRY, stop_tokens=[EOS], **kwargs
    )


def test_batch_calls_at_different_steps():
    prompts = ["Q", "A Q", "Q"]
    scripts = [
        "<call> calculator 1 2 + 3 4 </call> junk junk junk junk = 4 6",
        "A A A A <call> lookup paris country </call> junk junk junk = france",
        "A A",  # never calls
    ]
    out = run(scripted(prompts, scripts), prompts)
    assert [words(c) for c in out.continuations] == [
        "<call> calculator 1 2 + 3 4 </call> <result> 4 6 </result> = 4 6 <eos>",
        "A A A A <call> lookup paris country </call> <result> france </result> = france <eos>",
        "A A <eos>",
    ]
    assert out.finished == [True, True, True]
    assert [(c.seq, c.tool, c.arguments, c.result.value) for c in out.trace] == [
        (0, "calculator", "1 2 + 3 4", 46),
        (1, "lookup", "paris country", "france"),
    ]
    c0, c1 = out.trace
    assert (c0.call_start, c0.call_end, c0.result_start, c0.result_end) == (0, 7, 8, 11)
    assert (c1.call_start, c1.call_end, c1.result_start, c1.result_end) == (4, 8, 9, 11)
    assert c0.forced_text == "4 6" and c1.forced_text == "france"
    assert c0.error is None and c0.complete and c0.mode == "execute"
    # forced flags are exactly the result tokens
    for b, calls in enumerate([[c0], [c1], []]):
        expected = [
            any(c.result_start <= i <= c.result_end for c in calls)
            for i in range(len(out.continuations[b]))
        ]
        assert out.forced[b] == expected
    # positions map into the padded token tensor and the unpadded sequence
    row = out.tokens[1].tolist()
    assert row[out.prompt_width + c1.call_start] == VOCAB["<call>"]
    assert row[out.prompt_width + c1.result_end] == VOCAB["</result>"]
    full = ids(prompts[1]) + out.continuations[1]
    assert words(full[c1.prompt_len + c1.call_start : c1.prompt_len + c1.result_end + 1]) == (
        "<call> lookup paris country </call> <result> france </result>"
    )
    assert out.texts[0] == "<call> calculator 1 2 + 3 4 </call> <result> 4 6 </result> = 4 6 <eos>"
    assert out.calls(1) == [c1] and out.calls(2) == []


def test_model_reads_the_forced_result():
    out = run(ScriptedModel(copier), ["Q", "Q"])
    for cont in out.continuations:
        assert words(cont).endswith("</result> = 4 6 <eos>")


def test_several_calls_in_one_sequence_and_a_call_opened_in_the_prompt():
    prompts = ["Q <call> calculator 2 +", "Q"]
    scripts = [
        "3 </call> junk junk junk = <call> calculator 5 * 5 </call>",
        "<call> calculator 1 + 1 </call> junk junk junk <call> calculator 2 * 3 </call>",
    ]
    out = run(scripted(prompts, scripts), prompts)
    assert words(out.continuations[0]) == (
        "3 </call> <result> 5 </result> = <call> calculator 5 * 5 </call> <result> 2 5 </result> <eos>"
    )
    got = [(c.seq, c.call_start, c.call_end, c.arguments, c.result.value) for c in out.trace]
    assert got == [
        (0, -4, 1, "2 + 3", 5),  # <call> is 4 tokens before the end of the prompt
        (1, 0, 5, "1 + 1", 2),
        (0, 6, 11, "5 * 5", 25),
        (1, 9, 14, "2 * 3", 6),
    ]
    c = out.trace[0]
    full = ids(prompts[0]) + out.continuations[0]
    assert WORDS[full[c.prompt_len + c.call_start]] == "<call>"


@pytest.mark.parametrize(
    "script, error",
    [
        ("<call> calculator 1 + * </call>", "calculator: expected a number"),
        ("<call> calculator 1 / 0 </call>", "calculator: division by zero"),
        ("<call> search paris </call>", "unknown tool 'search'"),
        ("<call> </call>", "empty call"),
        ("A </call>", "'</call>' without an opening '<call>'"),
        ("<call> lookup paris mayor </call>", "has no relation 'mayor'"),
    ],
)
def test_malformed_call_is_an_error_and_generation_goes_on(script, error):
    prompts = ["Q", "Q"]
    model = scripted(prompts, [script + " junk junk junk A A", "A A A A A A A A A A"])
    out = run(model, prompts)
    (call,) = out.trace
    assert call.seq == 0 and not call.result.ok
    assert error in call.error
    assert words(out.continuations[0]) == script + " <result> error </result> A A <eos>"
    assert words(out.continuations[1]) == "A A A A A A A A A A <eos>"
    assert f"error: {call.error}" in format_trace(out)


def test_error_text_none_forces_the_message_itself():
    prompts = ["Q"]
    vocab_tok = dict(VOCAB)
    for w in "calculator: division by zero at position 2".split():
        vocab_tok.setdefault(w, len(vocab_tok))
    model = scripted(prompts, ["<call> calculator 1 / 0 </call>"])
    out = generate_with_tools(
        model, [ids("Q")], vocab_tok, REGISTRY, max_new_tokens=20, error_text=None
    )
    (call,) = out.trace
    assert call.forced_text == "calculator: division by zero at position 2"
    assert len(call.forced_tokens) == 2 + 7


def test_withheld_mode_forces_an_empty_result():
    out = run(ScriptedModel(copier), ["Q"], mode="withhold")
    assert words(out.continuations[0]) == (
        "<call> calculator 1 2 + 3 4 </call> <result> </result> = <eos>"
    )
    (call,) = out.trace
    assert call.mode == "withhold" and call.forced_text == ""
    assert call.result.value == 46  # what the tool would have said
    assert (call.result_start, call.result_end) == (8, 9)
    assert "withheld" in format_trace(out)


def test_counterfactual_mode_replaces_the_result():
    seen = []

    def plus_one_on_seq0(seq, result):
        seen.append((seq, result.tool, result.value))
        return result.value + 1 if seq == 0 else None

    out = run(
        ScriptedModel(copier),
        ["Q", "Q"],
        mode="counterfactual",
        counterfactual=plus_one_on_seq0,
    )
    assert seen == [(0, "calculator", 46), (1, "calculator", 46)]
    assert words(out.continuations[0]).endswith("<result> 4 7 </result> = 4 7 <eos>")
    assert words(out.continuations[1]).endswith("<result> 4 6 </result> = 4 6 <eos>")
    c0, c1 = out.trace
    assert c0.replaced and c0.forced_text == "4 7" and c0.result.value == 46
    assert not c1.replaced and c1.forced_text == "4 6"
    assert "counterfactual: forced '4 7'" in format_trace(out)


def test_counterfactual_value_given_as_text_and_unformattable():
    out = run(
        ScriptedModel(copier), ["Q"], mode="counterfactual", counterfactual=lambda s, r: "- 1 2"
    )
    assert out.trace[0].forced_text == "- 1 2"
    with pytest.raises(ValueError, match="cannot be formatted"):
        run(ScriptedModel(copier), ["Q"], mode="counterfactual", counterfactual=lambda s, r: "x")


def test_result_cut_off_by_max_new_tokens():
    out = run(ScriptedModel(copier), ["Q"], max_new_tokens=10)
    (call,) = out.trace
    assert len(out.continuations[0]) == 10
    assert call.result_end == 11 and not call.complete
    assert "cut off" in format_trace(out)


def test_vocab_mapping_and_text_prompts():
    prompts = ["Q", "A Q"]
    model = scripted(prompts, ["<call> calculator 7 * 6 </call>", "A"])
    out = generate_with_tools(model, prompts, VOCAB, REGISTRY, max_new_tokens=20, stop_tokens=[EOS])
    assert out.texts[0] == "<call> calculator 7 * 6 </call> <result> 4 2 </result> <eos>"
    assert out.trace[0].result.value == 42
    assert out.prompt_width == 2


def test_configuration_errors():
    model = ScriptedModel(copier)
    with pytest.raises(ValueError, match="mode='guess'"):
        run(model, ["Q"], mode="guess")
    with pytest.raises(ValueError, match="needs a counterfactual"):
        run(model, ["Q"], mode="counterfactual")
    with pytest.raises(ValueError, match="no token for <tool>"):
        ToolForcer(REGISTRY, TOKENIZER, [[1]], markers=CallMarkers(call="<tool>"))
    with pytest.raises(ValueError, match="needs a tokenizer"):
        generate_with_tools(model, [[1]], None, REGISTRY)


def test_registry_dispatch_and_a_broken_tool():
    class Broken(Tool):
        name = "broken"

        def parse(self, arguments):
            return arguments

        def execute(self, args):
            raise ZeroDivisionError("oops")

        def format(self, value):
            return str(value)

    class Picky(Broken):
        name = "picky"

        def execute(self, args):
            raise ToolError("picky: no")

    registry = ToolRegistry([Broken(), Picky()])
    assert registry.call("broken 1").error == "broken failed: ZeroDivisionError: oops"
    assert registry.call("picky 1").error == "picky: no"
    assert "unknown tool 'nope' (known: broken, picky)" in registry.call("nope 1").error
    assert registry.names == ["broken", "picky"] and "picky" in registry
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Picky())
    with pytest.raises(KeyError, match="registered: broken, picky"):
        registry.get("nope")


def test_format_trace_and_json():
    prompts = ["Q", "Q"]
    out = run(
        scripted(
            prompts,
            [
                "<call> calculator 1 2 + 3 4 </call> junk junk junk junk",
                "A <call> calculator 1 / 0 </call>",
            ],
        ),
        prompts,
    )
    lines = format_trace(out).splitlines()
    assert lines[0].split() == ["seq", "call", "result", "tool", "arguments", "->", "result"]
    # seq 1 calls first (at step 6), seq 0 at step 7
    assert lines[1].startswith("1    1-6   7-9     calculator  1 / 0")
    assert lines[1].endswith("-> error: calculator: division by zero at position 2")
    assert lines[2].split() == "0 0-7 8-11 calculator 1 2 + 3 4 -> 4 6".split()
    assert format_trace([]) == "(no tool calls)"
    records = json.loads(json.dumps([c.to_dict() for c in out.trace]))
    assert records[1]["value"] == 46 and records[1]["result_end"] == 11
    assert records[0]["error"].startswith("calculator: division by zero")


@pytest.mark.parametrize("tokenizer", [TOKENIZER, VOCAB], ids=["tokenizers", "vocab"])
def test_result_the_vocabulary_cannot_spell_is_forced_empty(tokenizer):
    registry = ToolRegistry([Lookup({"paris": {"country": "narnia"}})])
    model = scripted(["Q"], ["<call> lookup paris country </call> junk junk A"])
    out = generate_with_tools(
        model, [ids("Q")], tokenizer, registry, max_new_tokens=20, stop_tokens=[EOS]
    )
    (call,) = out.trace
    assert call.result.ok and call.result.value == "narnia"  # the tool answered
    assert call.forced_text == "" and "not in the vocabulary: 'narnia'" in call.error
    assert words(out.continuations[0]) == (
        "<call> lookup paris country </call> <result> </result> A <eos>"
    )


def test_with_the_suite_tokenizer_and_knowledge_graph():
    """The skill suite's word-level vocabulary (which reserves the call tokens and
    the tool words 'calculator' and 'lookup') and its KnowledgeGraph."""
    from glassbox.training.data import DataConfig, knowledge_graph, suite_tokenizer

    cfg = DataConfig()
    tok, kg = suite_tokenizer(cfg), knowledge_graph(cfg)
    entity, relation = kg.entities[3], kg.relations[1]
    not_an_entity = kg.relations[0]  # a word of the vocabulary, but no entity
    registry = ToolRegistry([Calculator(), Lookup(kg)])
    prompts = ["1 2 + 3 9 =", f"{entity} {relation}"]
    scripts = [
        "<call> calculator 1 2 + 3 9 </call> = = = =",
        f"<call> lookup {entity} {relation} </call> = = = "
        f"<call> lookup {not_an_entity} {relation} </call>",
    ]
    enc = [tok.encode(p, add_special_tokens=False).ids for p in prompts]
    plans = [tok.encode(s, add_special_tokens=False).ids for s in scripts]
    eos = tok.token_to_id("<eos>")

    def policy(b, history):
        step = len(history) - len(enc[b])
        return plans[b][step] if step < len(plans[b]) else eos

    model = ScriptedModel(policy, vocab_size=tok.get_vocab_size())
    out = generate_with_tools(model, enc, tok, registry, max_new_tokens=30, stop_tokens=[eos])
    assert out.texts[0] == "<call> calculator 1 2 + 3 9 </call> <result> 5 1 </result> <eos>"
    value = kg.attribute(entity, relation)
    assert out.texts[1] == (
        f"<call> lookup {entity} {relation} </call> <result> {value} </result> "
        f"<call> lookup {not_an_entity} {relation} </call> <result> error </result> <eos>"
    )
    c0, c1, c2 = sorted(out.trace, key=lambda c: (c.seq, c.call_end))
    assert c0.result.value == 51 and c1.result.value == value
    assert f"unknown entity {not_an_entity!r}" in c2.error
    # 'error' is a reserved suite word: the failed call's result says so
    assert c2.forced_text == "error" and c2.error == c2.result.error


def test_real_transformer_sees_the_forced_tokens():
    """With a real (random) Transformer and its KV cache: every sampled token after
    a forced result is the greedy choice of a full forward pass over the whole
    sequence, so the forced tokens were fed back into the cache."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(VOCAB), d_model=32, n_layers=2, n_heads=4, max_seq_len=64)
    model = Transformer(cfg)
    prompts = [ids("Q 1 2"), ids("A")]
    plain = model.generate(prompts, max_new_tokens=6)
    # Make the token the model greedily says at step 2 of row 0 the call's end marker:
    # the call is then certain to happen (as a stray '</call>': an error result).
    marker = WORDS[plain.continuations[0][2]]
    specials = {"<call>", "<result>", "</result>", "error"}
    if marker in specials:
        pytest.skip("the random model picked a protocol token")
    markers = CallMarkers(call_end=marker)
    out = generate_with_tools(model, prompts, VOCAB, REGISTRY, max_new_tokens=20, markers=markers)
    first = out.calls(0)[0]
    assert first.call_end == 2 and first.error
    assert out.continuations[0][3:6] == ids("<result> error </result>")
    for b, prompt in enumerate(prompts):
        seq = torch.tensor([prompt + out.continuations[b]])
        greedy = model(seq)[0].argmax(-1).tolist()  # no cache, no padding
        for i, (tok, forced) in enumerate(zip(out.continuations[b], out.forced[b])):
            if not forced:
                assert tok == greedy[len(prompt) + i - 1], (b, i)
    assert sum(map(sum, out.forced)) >= 3
