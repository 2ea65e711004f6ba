"""The suite's shared word-level vocabulary, built with `tokenizers`.

Every glassbox tokenizer (this one and the text BPE) starts with the same special
tokens, so `<pad>` is 0, `<bos>` 1, `<eos>` 2 and `<unk>` 3 everywhere. The
tool-calling tokens, a `<tag:skill>` per skill (including the tool-call
variants `addition_tool` and `facts_tool`), the tool names and every word a tool
call or its result can hold (the calculator's operators, `error` for a failed
call) are reserved, so the vocabulary does not change with the mix.

Order after the specials and tags: the tool names, the number tokens 0..N-1 in
numeric order (N the largest any skill needs, at least 10: digits are numbers),
then every other word in registry order, then the reserved tool words no skill
emits (appended last, so that reserving them moved no other word's id). The
words depend on the size keys only, never on the seed or the mix, so models
trained on different mixes share a vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
CALL, CALL_END, RESULT, RESULT_END = "<call>", "</call>", "<result>", "</result>"
# ids 0..7 in every glassbox tokenizer
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, CALL, CALL_END, RESULT, RESULT_END)
# skills whose tags are reserved before the skills exist (tool-calling issue)
RESERVED_SKILLS = ("addition_tool", "facts_tool")
# tool names a call names: <call> calculator 1 2 + 3 </call>, <call> lookup Bako city </call>
TOOL_WORDS = ("calculator", "lookup")
# what a calculator call or a failed call's result can hold besides numbers
# (archs.tools.calculator's grammar; the runtime forces `error` when a call fails)
ERROR_WORD = "error"
TOOL_ARGUMENT_WORDS = ("+", "-", "*", "/", "%", "(", ")", ERROR_WORD)


def tag_token(skill: str) -> str:
    """The task-tag token of a skill: `<tag:addition>`."""
    return f"<tag:{skill}>"


def build_word_tokenizer(skill_names: Iterable[str], words: Iterable[str]) -> Tokenizer:
    """A WordLevel tokenizer over the specials, one tag per skill, and `words`.

    Text is split on whitespace; decode joins tokens with single spaces, so
    `encode(decode(ids)).ids == ids` for any ids."""
    tags = [tag_token(s) for s in dict.fromkeys([*skill_names, *RESERVED_SKILLS])]
    words = list(dict.fromkeys(words))
    numbers = sorted({int(w) for w in words if w.isdigit()} | set(range(10)))
    numbers = [str(n) for n in range(numbers[-1] + 1)]  # contiguous: id of n = id of "0" + n
    others = [w for w in words if not w.isdigit()]
    ordered = [*SPECIAL_TOKENS, *tags, *TOOL_WORDS, *numbers, *others, *TOOL_ARGUMENT_WORDS]
    ordered = list(dict.fromkeys(ordered))
    for w in ordered:
        if not w or any(c.isspace() for c in w):
            raise ValueError(f"vocabulary word {w!r} is empty or holds whitespace")
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(ordered)}, unk_token=UNK))
    tok.pre_tokenizer = WhitespaceSplit()
    # Specials and tags are matched before splitting and skipped by decode(skip_special_tokens).
    tok.add_special_tokens([AddedToken(t, special=True) for t in (PAD, BOS, EOS, UNK, *tags)])
    tok.add_tokens([AddedToken(t, special=False) for t in (CALL, CALL_END, RESULT, RESULT_END)])
    return tok
