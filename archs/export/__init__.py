"""Converters between glassbox models and outside formats, one function per direction.

- `to_hf_llama(model)` / `from_hf_llama(hf_model)`: HF transformers' LlamaForCausalLM;
- `to_hf_mixtral(model)`: a softmax top-k MoE as HF's MixtralForCausalLM;
  `export_hf(model_or_checkpoint, out_dir)` writes a `from_pretrained` directory of
  either, chosen by the FFN kind (`to_hf`).
- `to_transformer_lens(model)`: a TransformerLens TransformerBridge (TL 4 has no
  HookedTransformer), with `TL_HOOK_NAMES` mapping our hook names onto its;
  `export_transformer_lens(model_or_checkpoint, out_dir)` writes a directory that
  `TransformerBridge.boot_transformers(out_dir)` loads.

The peers (transformers, transformer-lens) are optional extras, imported only when a
converter runs.
"""

from glassbox.archs.export.errors import ExportError
from glassbox.archs.export.hf import export_hf, from_hf_llama, hf_llama_config, to_hf, to_hf_llama
from glassbox.archs.export.mixtral import hf_mixtral_config, to_hf_mixtral
from glassbox.archs.export.transformer_lens import (
    TL_HOOK_NAMES,
    export_transformer_lens,
    tl_hook_name,
    to_transformer_lens,
)

__all__ = [
    "TL_HOOK_NAMES",
    "ExportError",
    "export_hf",
    "export_transformer_lens",
    "from_hf_llama",
    "hf_llama_config",
    "hf_mixtral_config",
    "tl_hook_name",
    "to_hf",
    "to_hf_llama",
    "to_hf_mixtral",
    "to_transformer_lens",
]
