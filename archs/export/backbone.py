"""What the HF converters share (archs/export/hf.py: Llama, archs/export/mixtral.py:
Mixtral): the backbone's weight names, which are the same in both (attention, norms,
embeddings), and the special token ids HF keeps in its config and tokenizer."""

from __future__ import annotations

# Token strings tried, in order, for the ids HF keeps in its config and tokenizer.
BOS_CANDIDATES = ("<bos>", "<|bos|>", "<s>", "<|begin_of_text|>", "<|startoftext|>", "[BOS]")
EOS_CANDIDATES = ("<eos>", "<|eos|>", "</s>", "<|end_of_text|>", "<|endoftext|>", "[EOS]")
UNK_CANDIDATES = ("<unk>", "<|unk|>", "[UNK]")


def attention_map(i: int) -> list[tuple[str, str]]:
    """(glassbox name, HF name) of layer i's norms and attention weights, the same in
    LlamaForCausalLM and MixtralForCausalLM."""
    ours, hf = f"blocks.{i}.", f"model.layers.{i}."
    pairs = [
        ("ln1.w", "input_layernorm.weight"),
        ("attn.W_Q.weight", "self_attn.q_proj.weight"),
        ("attn.W_K.weight", "self_attn.k_proj.weight"),
        ("attn.W_V.weight", "self_attn.v_proj.weight"),
        ("attn.W_O.weight", "self_attn.o_proj.weight"),
        ("ln2.w", "post_attention_layernorm.weight"),
    ]
    return [(ours + a, hf + b) for a, b in pairs]


def _token_id(tokenizer, candidates: tuple[str, ...]) -> int | None:
    if tokenizer is None:
        return None
    for tok in candidates:
        i = tokenizer.token_to_id(tok)
        if i is not None:
            return i
    return None


def special_token_ids(model) -> dict[str, int | None]:
    """pad/bos/eos/unk ids as far as they are known: pad from the config, the others
    from well-known token strings in the model's tokenizer (None when absent)."""
    tok = getattr(model, "tokenizer", None)
    pad = model.cfg.pad_token_id
    if tok is not None and tok.id_to_token(pad) is None:
        pad = None
    return {
        "pad": pad,
        "bos": _token_id(tok, BOS_CANDIDATES),
        "eos": _token_id(tok, EOS_CANDIDATES),
        "unk": _token_id(tok, UNK_CANDIDATES),
    }
