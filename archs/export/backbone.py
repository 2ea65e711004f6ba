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


def decoder_config_kwargs(model) -> dict:
    """The keyword arguments a transformers Llama-family config (LlamaConfig,
    MixtralConfig) takes from our backbone: sizes, attention, rotary, norm, embeddings,
    special tokens and dtype. Each converter adds what its FFN needs."""
    cfg = model.cfg
    ids = special_token_ids(model)
    return dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.d_head,
        hidden_act="silu",
        max_position_embeddings=cfg.max_seq_len,
        initializer_range=cfg.init_std,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
        attention_dropout=0.0,
        tie_word_embeddings=cfg.tie_embeddings,
        pad_token_id=ids["pad"],
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        dtype=next(model.parameters()).dtype,
    )
