"""Tool calls executed during generation, and the trace that explains them.

The model writes a call as tokens and the runtime writes the result back:

    <call> calculator 1 2 3 + 4 5 6 </call> <result> 5 7 9 </result>
    |------------ sampled -------------|   |---------- forced ---------|

`ToolForcer` is an `archs.generation.TokenForcer`: after each token of each
sequence it checks for `</call>`; then it decodes the tokens since the matching
`<call>` (the call may have been opened in the prompt), runs the call through the
`ToolRegistry`, and queues `<result> ... </result>` to be forced. The batch stays in
lock step, so sequences that call at different steps are handled independently.
Every call is recorded as a `ToolCall` with its positions, so an analysis can find
the call and result tokens in the generated sequence.

Modes, for measuring how much the model relies on its tools:

- "execute": the tool's answer is forced (on error, `error_text` is forced and the
  message goes into the trace).
- "withhold": the tool is disabled: `<result> </result>` is forced with nothing
  inside. The protocol tokens stay where the model expects them, so what changes
  is only the missing content. The tool still runs, and the trace keeps what it
  would have said.
- "counterfactual": `counterfactual(seq, result)` gives a replacement value,
  formatted by the tool's own formatter and forced instead; returning None keeps
  the true result for that call.

A result the vocabulary cannot spell (a word the tokenizer would write as <unk>,
such as `error` in a vocabulary without that word) is forced as an empty result,
`<result> </result>`, and the trace says which words were missing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from glassbox.archs.errors import ArgumentError
from glassbox.archs.generation import GenerationOutput, check_sampling_args, generate
from glassbox.archs.tools.base import ToolRegistry, ToolResult

MODES = ("execute", "withhold", "counterfactual")
Counterfactual = Callable[[int, ToolResult], Any]


@dataclass(frozen=True)
class CallMarkers:
    """The reserved tokens of the call protocol (token strings in the vocabulary)."""

    call: str = "<call>"
    call_end: str = "</call>"
    result: str = "<result>"
    result_end: str = "</result>"


class TokenCodec:
    """The few tokenizer operations the runtime needs, over a `tokenizers.Tokenizer`
    (or anything with token_to_id / encode / decode) or a word-level vocabulary
    mapping {token: id} (words separated by spaces)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.vocab: dict[str, int] | None = None
        self.unk_token: str | None = None
        if isinstance(tokenizer, Mapping):
            self.vocab = dict(tokenizer)
            self.inverse = {i: t for t, i in self.vocab.items()}
        elif all(hasattr(tokenizer, m) for m in ("encode", "decode")):
            model = getattr(tokenizer, "model", None)  # tokenizers.Tokenizer keeps it there
            unk = getattr(model, "unk_token", None) or getattr(tokenizer, "unk_token", None)
            self.unk_token = unk if isinstance(unk, str) else None
        else:
            raise TypeError(
                f"tokenizer: expected a tokenizers.Tokenizer or a {{token: id}} mapping, "
                f"got {type(tokenizer).__name__}"
            )
        self.unk_id = self.token_id(self.unk_token) if self.unk_token else None

    def token_id(self, token: str) -> int | None:
        if self.vocab is not None:
            return self.vocab.get(token)
        tok = self.tokenizer
        if hasattr(tok, "token_to_id"):
            return tok.token_to_id(token)
        ids = tok.convert_tokens_to_ids([token])  # transformers tokenizers
        unk = getattr(tok, "unk_token_id", None)
        return None if not ids or ids[0] is None or ids[0] == unk else ids[0]

    def encode(self, text: str) -> list[int]:
        """Text -> ids; ValueError naming the words the vocabulary cannot spell
        (rather than writing <unk> into the stream)."""
        if self.vocab is not None:
            unknown = [w for w in text.split() if w not in self.vocab]
            ids = [self.vocab.get(w) for w in text.split()]
        else:
            out = self.tokenizer.encode(text, add_special_tokens=False)
            ids = list(getattr(out, "ids", out))
            offsets = getattr(out, "offsets", None) or [None] * len(ids)
            unknown = [
                "?" if span is None else text[span[0] : span[1]]
                for i, span in zip(ids, offsets)
                if self.unk_id is not None and i == self.unk_id
            ]
            unknown = [w for w in unknown if w != self.unk_token]
        if unknown:
            raise ValueError(f"not in the vocabulary: {', '.join(map(repr, unknown))}")
        return ids  # type: ignore[return-value]

    def decode(self, ids: Sequence[int]) -> str:
        if self.vocab is not None:
            return " ".join(self.inverse.get(int(i), f"<{int(i)}?>") for i in ids)
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


@dataclass
class ToolCall:
    """One call made during generation.

    Positions index the sequence's continuation (its generated tokens), so token i
    of sequence `seq` is `output.continuations[seq][i]`, at position
    `prompt_len + i` of the unpadded sequence and `output.prompt_width + i` of the
    row in `output.tokens`. `call_start` is negative when `<call>` was in the prompt
    and None when no `<call>` opened this call. The forced tokens are
    `forced_tokens`, written at `result_start .. result_end` (inclusive); when
    generation ended first, `complete` is False.
    """

    seq: int
    call_start: int | None  # index of <call>
    call_end: int  # index of </call>: also the generation step at which the call ran
    text: str  # decoded text between <call> and </call>
    result: ToolResult  # what the tool answered (also when withheld or replaced)
    mode: str  # execute | withhold | counterfactual
    forced_text: str  # what was written between <result> and </result>
    forced_tokens: list[int]  # <result> ... </result> as token ids
    prompt_len: int
    error: str | None = None  # the tool's error, or what else went wrong with this call
    replaced: bool = False  # counterfactual mode replaced the true result
    complete: bool = True  # every forced token was written before generation ended

    @property
    def tool(self) -> str:
        return self.result.tool

    @property
    def arguments(self) -> str:
        return self.result.arguments

    @property
    def result_start(self) -> int:
        return self.call_end + 1

    @property
    def result_end(self) -> int:
        return self.call_end + len(self.forced_tokens)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (for JSON output)."""
        value = self.result.value
        return {
            "seq": self.seq,
            "tool": self.tool,
            "arguments": self.arguments,
            "call_start": self.call_start,
            "call_end": self.call_end,
            "result_start": self.result_start,
            "result_end": self.result_end,
            "prompt_len": self.prompt_len,
            "mode": self.mode,
            "result": self.result.text,
            "value": value
            if isinstance(value, int | float | str | bool) or value is None
            else str(value),
            "forced": self.forced_text,
            "replaced": self.replaced,
            "error": self.error,
            "complete": self.complete,
        }


class ToolForcer:
    """A TokenForcer that runs tool calls (see the module docstring).

    prompts: each sequence's prompt tokens (to find a `<call>` opened in the prompt).
    error_text: what is forced inside the result when a call fails; None forces the
    error message itself (only useful when the tokenizer can spell any text).
    """

    def __init__(
        self,
        registry: ToolRegistry,
        tokenizer: Any,
        prompts: Sequence[Sequence[int]],
        *,
        mode: str = "execute",
        counterfactual: Counterfactual | None = None,
        error_text: str | None = "error",
        markers: CallMarkers | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: one of {', '.join(MODES)}")
        if mode == "counterfactual" and counterfactual is None:
            raise ValueError("mode='counterfactual' needs a counterfactual(seq, result) callback")
        self.registry = registry
        self.codec = tokenizer if isinstance(tokenizer, TokenCodec) else TokenCodec(tokenizer)
        self.mode = mode
        self.counterfactual = counterfactual
        self.error_text = error_text
        self.markers = markers or CallMarkers()
        ids = {k: self.codec.token_id(v) for k, v in vars(self.markers).items()}
        missing = [getattr(self.markers, k) for k, v in ids.items() if v is None]
        if missing:
            raise ValueError(
                f"the tokenizer has no token for {', '.join(missing)}: the call protocol needs "
                "them in the vocabulary (or pass markers=CallMarkers(...) naming its tokens)"
            )
        self.call_id, self.call_end_id = ids["call"], ids["call_end"]
        self.result_id, self.result_end_id = ids["result"], ids["result_end"]
        self.prompts = [list(map(int, p)) for p in prompts]
        self.trace: list[ToolCall] = []
        self._pending = [0] * len(self.prompts)  # forced tokens still to come, per sequence
        self._floor = [0] * len(self.prompts)  # a call cannot open before this index

    def after_token(self, seq: int, tokens: list[int]) -> list[int]:
        if self._pending[seq]:
            self._pending[seq] -= 1  # one of our own forced tokens
            return []
        if tokens[-1] != self.call_end_id:
            return []
        call_end = len(tokens) - 1
        start = self._find_call(seq, tokens, call_end)
        if start is None:
            text = ""
            result = ToolResult("", "", error="'</call>' without an opening '<call>'")
        else:
            if start >= 0:
                body = tokens[start + 1 : call_end]
            else:  # opened in the prompt: prompt tail + continuation
                prompt = self.prompts[seq]
                body = prompt[len(prompt) + start + 1 :] + tokens[:call_end]
            text = self.codec.decode(body).strip()
            result = self.registry.call(text)
        call = self._result_tokens(seq, start, call_end, text, result)
        self.trace.append(call)
        self._pending[seq] = len(call.forced_tokens)
        self._floor[seq] = len(tokens) + len(call.forced_tokens)
        return list(call.forced_tokens)

    def _find_call(self, seq: int, tokens: list[int], call_end: int) -> int | None:
        """Index of the `<call>` this `</call>` closes (negative: in the prompt)."""
        for i in range(call_end - 1, self._floor[seq] - 1, -1):
            if tokens[i] == self.call_id:
                return i
        if self._floor[seq] > 0:
            return None  # an earlier call's result stands between
        prompt = self.prompts[seq]
        for i in range(len(prompt) - 1, -1, -1):
            if prompt[i] == self.call_id:
                return i - len(prompt)
            if prompt[i] in (self.call_end_id, self.result_end_id):
                return None
        return None

    def _result_tokens(
        self, seq: int, start: int | None, call_end: int, text: str, result: ToolResult
    ) -> ToolCall:
        error = result.error
        replaced = False
        if self.mode == "withhold":
            body = ""
        elif (
            self.mode == "counterfactual"
            and (value := self.counterfactual(seq, result)) is not None
        ):
            body, replaced = self._format_replacement(result, value), True
        elif result.ok:
            body = result.text or ""
        else:
            body = error if self.error_text is None else self.error_text
        try:
            inner = self.codec.encode(body) if body else []
        except Exception as e:  # text the vocabulary cannot spell: force an empty result
            error = f"{error + '; ' if error else ''}result {body[:40]!r} cannot be written: {e}"
            body, inner = "", []
        return ToolCall(
            seq=seq,
            call_start=start,
            call_end=call_end,
            text=text,
            result=result,
            mode=self.mode,
            forced_text=body,
            forced_tokens=[self.result_id, *inner, self.result_end_id],
            prompt_len=len(self.prompts[seq]),
            error=error,
            replaced=replaced,
        )

    def _format_replacement(self, result: ToolResult, value: Any) -> str:
        if result.tool not in self.registry:
            return " ".join(str(value).split())
        try:
            return self.registry.get(result.tool).format(value)
        except Exception as e:
            raise ValueError(
                f"counterfactual value {value!r} for tool {result.tool!r} cannot be formatted: {e}"
            ) from None


@dataclass
class ToolGenerationOutput(GenerationOutput):
    """GenerationOutput plus the tool trace. `prompt_width` is the padded prompt
    length: continuation index i of any row is at position prompt_width + i of
    `tokens`."""

    trace: list[ToolCall] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # decoded continuations
    prompt_width: int = 0

    def calls(self, seq: int) -> list[ToolCall]:
        return [c for c in self.trace if c.seq == seq]


def _checked_codec(model, tokenizer: Any, registry: ToolRegistry | None, mode: str) -> TokenCodec:
    """The codec of `tokenizer` (default model.tokenizer), once `mode` is checked
    (ArgumentError) and there is a tokenizer and a registry (ValueError)."""
    if mode not in MODES:
        raise ArgumentError("mode", mode, f"one of {', '.join(MODES)}")
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("generate_with_tools needs a tokenizer (or a model with .tokenizer)")
    if registry is None:
        raise ValueError("generate_with_tools needs a ToolRegistry")
    return TokenCodec(tokenizer)


def _prompt_rows(
    prompts: Tensor | Sequence[Sequence[int]] | Sequence[str] | str, codec: TokenCodec
) -> tuple[Tensor | list[list[int]], list[list[int]]]:
    """(the prompts as `generate` takes them, their token id rows): a tensor is kept
    as it is, text is encoded with `codec`."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, Tensor):
        return prompts, (prompts[None] if prompts.dim() == 1 else prompts).tolist()
    rows = [codec.encode(p) if isinstance(p, str) else [int(t) for t in p] for p in prompts]
    return rows, rows


def generate_with_tools(
    model,
    prompts: Tensor | Sequence[Sequence[int]] | Sequence[str] | str,
    tokenizer: Any = None,
    registry: ToolRegistry | None = None,
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
    stop_tokens: Sequence[int] = (),
    seed: int | None = None,
    mode: str = "execute",
    counterfactual: Counterfactual | None = None,
    error_text: str | None = "error",
    markers: CallMarkers | None = None,
) -> ToolGenerationOutput:
    """archs.generation.generate with tool calls executed and traced.

    prompts: token id lists, a (B, T) tensor, or text (one string or a list of
    strings, encoded with the tokenizer without special tokens). tokenizer: a
    tokenizers.Tokenizer or a {token: id} vocabulary; default model.tokenizer.
    registry: the tools. mode / counterfactual / error_text: see ToolForcer. The
    forced result tokens count towards max_new_tokens.
    Returns a ToolGenerationOutput: the generation fields, `trace` (a ToolCall per
    call, in the order they ran) and `texts` (decoded continuations). The arguments
    are checked first, as by `generate` (ArgumentError, one line).
    """
    check_sampling_args(max_new_tokens, temperature, top_k)
    codec = _checked_codec(model, tokenizer, registry, mode)
    prompts, rows = _prompt_rows(prompts, codec)
    forcer = ToolForcer(
        registry,
        codec,
        rows,
        mode=mode,
        counterfactual=counterfactual,
        error_text=error_text,
        markers=markers,
    )
    out = generate(
        model,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        stop_tokens=stop_tokens,
        forcer=forcer,
        seed=seed,
    )
    for call in forcer.trace:
        call.complete = call.result_end < len(out.continuations[call.seq])
    return ToolGenerationOutput(
        tokens=out.tokens,
        continuations=out.continuations,
        finished=out.finished,
        forced=out.forced,
        trace=forcer.trace,
        texts=[codec.decode(c) for c in out.continuations],
        prompt_width=max(len(r) for r in rows),
    )


def _span(a: int | None, b: int) -> str:
    return f"{'?' if a is None else a}-{b}"


def format_trace(trace: ToolGenerationOutput | Sequence[ToolCall], max_arg_chars: int = 60) -> str:
    """The trace as a table, one line per call:

    seq  call  result  tool  arguments  -> result
    0    3-9   10-14   calculator  1 2 + 3 4  -> 4 6
    1    0-4   5-7     calculator  1 / 0      -> error: calculator: division by zero at position 2
    """
    calls = trace.trace if isinstance(trace, ToolGenerationOutput) else list(trace)
    if not calls:
        return "(no tool calls)"
    rows = []
    for c in calls:
        args = c.arguments if c.tool else c.text
        if len(args) > max_arg_chars:
            args = args[: max_arg_chars - 3] + "..."
        answer = c.result.text if c.result.ok else f"error: {c.error}"
        notes = []
        if c.mode == "withhold":
            notes.append("withheld: nothing forced")
        if c.replaced:
            notes.append(f"counterfactual: forced {c.forced_text!r}")
        if c.result.ok and c.error:
            notes.append(f"error: {c.error}")
        if not c.complete:
            notes.append("result cut off by max_new_tokens")
        note = f"  [{'; '.join(notes)}]" if notes else ""
        rows.append(
            (
                str(c.seq),
                _span(c.call_start, c.call_end),
                _span(c.result_start, c.result_end),
                c.tool or "?",
                args,
                f"-> {answer}{note}",
            )
        )
    header = ("seq", "call", "result", "tool", "arguments", "-> result")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    lines = []
    for r in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths)) + "  " + r[5])
    return "\n".join(line.rstrip() for line in lines)
