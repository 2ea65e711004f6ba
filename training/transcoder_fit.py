"""The post-hoc route: fit transcoders to a trained dense model's MLPs, then splice
them in.

    acts = MLPActivations(model, batches, layers=[0, 1])        # (mlp_in, mlp_out) pairs
    tcs = fit_transcoders(model, batches, [0, 1], TranscoderConfig(d_latent=1024, k=16))
    spliced = splice(model, tcs)                                 # a normal Transformer
    archs.save_pretrained(spliced, "runs/x/spliced")

Layer i's transcoder reads `blocks.i.hook_mlp_in` (the normalised input the MLP
reads) and is trained to output `blocks.i.hook_mlp_out`. The frozen model runs on
token batches inside an IterableDataset that yields shuffled (mlp_in, mlp_out)
batches, optionally cached to disk as safetensors shards; a small LightningModule
trains every layer's transcoder at once with Adam on the normalised MSE (the batch's
FVU) plus the transcoders' own losses (AuxK, JumpReLU L0), and puts the decoder rows
back on the unit sphere after each step.

What this route costs against reading the latents of a model built with transcoders
is measured one floor up (analysis.feature_cost.measure_feature_cost).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from glassbox.archs.config import FFNConfig, TranscoderConfig
from glassbox.archs.transcoder import Transcoder, normalized_mse
from glassbox.archs.transformer import Transformer


def _token_batches(batches: Iterable) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(input_ids (B, T), attention_mask (B, T) or None) from dict batches (as
    training.data.collate makes them) or plain id tensors."""
    for batch in batches:
        if isinstance(batch, Tensor):
            yield (batch if batch.dim() == 2 else batch[None]), None
        else:
            yield batch["input_ids"], batch.get("attention_mask")


class MLPActivations(IterableDataset):
    """Streams (mlp_in, mlp_out) batches of a frozen model's MLPs.

    Yields (x, y), each (batch_tokens, n_layers, d_model): x[:, j] is
    `blocks.{layers[j]}.hook_mlp_in` and y[:, j] `blocks.{layers[j]}.hook_mlp_out`
    at the same (real, non-padding) token. Activations of whole sequences are
    correlated, so they pass through a shuffle buffer of `buffer_tokens` first.

    batches: an iterable of token batches (dicts with input_ids and attention_mask,
    or (B, T) id tensors), iterated once per epoch, so make it re-iterable (a list,
    a DataLoader) for more than one. cache_dir: if given, the first iteration runs
    the model over every batch and writes the pairs as safetensors shards there
    (`shard-00000.safetensors`, ..., then `manifest.json`); every iteration after,
    and every later dataset on the same directory and layers, reads the shards
    instead of running the model.
    """

    def __init__(
        self,
        model: Transformer,
        batches: Iterable,
        layers: Sequence[int],
        batch_tokens: int = 1024,
        buffer_tokens: int = 32768,
        shuffle: bool = True,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        shard_tokens: int = 65536,
    ):
        super().__init__()
        if not layers:
            raise ValueError("MLPActivations: `layers` is empty; name the layers to fit")
        bad = [i for i in layers if not 0 <= i < model.cfg.n_layers]
        if bad:
            raise ValueError(f"MLPActivations: layers {bad} not in 0..{model.cfg.n_layers - 1}")
        self.model, self.batches, self.layers = model, batches, list(layers)
        self.batch_tokens, self.buffer_tokens = batch_tokens, max(buffer_tokens, batch_tokens)
        self.shuffle, self.seed = shuffle, seed
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.shard_tokens = shard_tokens
        self.epoch = 0

    # --------------------------------------------------------------- sources
    @torch.no_grad()
    def _model_chunks(self) -> Iterator[tuple[Tensor, Tensor]]:
        """(x, y), (n_real_tokens, n_layers, d_model), one pair per token batch."""
        self.model.eval()
        ins = [f"blocks.{i}.hook_mlp_in" for i in self.layers]
        outs = [f"blocks.{i}.hook_mlp_out" for i in self.layers]
        device = self.model.device
        for ids, att in _token_batches(self.batches):
            ids = ids.to(device)
            att = att.to(device) if att is not None else None
            _, cache = self.model.run_with_cache(ids, attention_mask=att, names_filter=ins + outs)
            m = att.bool() if att is not None else torch.ones_like(ids, dtype=torch.bool)
            x = torch.stack([cache[n][m] for n in ins], 1)
            y = torch.stack([cache[n][m] for n in outs], 1)
            yield x, y

    def _manifest(self) -> dict[str, Any] | None:
        f = self.cache_dir / "manifest.json" if self.cache_dir is not None else None
        if f is None or not f.is_file():
            return None
        manifest = json.loads(f.read_text())
        if manifest.get("layers") != self.layers:
            raise ValueError(
                f"{f} caches layers {manifest.get('layers')}, not {self.layers}: "
                "use another cache_dir or delete this one"
            )
        return manifest

    def build_cache(self) -> dict[str, Any]:
        """Run the model over every batch and write the shards (if not written yet).
        Returns the manifest: layers, d_model, n_tokens, shards."""
        if self.cache_dir is None:
            raise ValueError("MLPActivations.build_cache: no cache_dir was given")
        manifest = self._manifest()
        if manifest is not None:
            return manifest
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        shards: list[str] = []
        n_tokens = 0
        pending: list[tuple[Tensor, Tensor]] = []

        def flush(final: bool) -> None:
            nonlocal pending
            if not pending:
                return
            x = torch.cat([p[0] for p in pending]).cpu()
            y = torch.cat([p[1] for p in pending]).cpu()
            cut = x.shape[0] if final else (x.shape[0] // self.shard_tokens) * self.shard_tokens
            for s in range(0, cut, self.shard_tokens):
                name = f"shard-{len(shards):05d}.safetensors"
                xs = x[s : min(s + self.shard_tokens, cut)].contiguous()
                ys = y[s : min(s + self.shard_tokens, cut)].contiguous()
                save_file({"mlp_in": xs, "mlp_out": ys}, str(self.cache_dir / name))
                shards.append(name)
            pending = [(x[cut:], y[cut:])] if cut < x.shape[0] else []

        for x, y in self._model_chunks():
            pending.append((x, y))
            n_tokens += x.shape[0]
            if sum(p[0].shape[0] for p in pending) >= self.shard_tokens:
                flush(final=False)
        flush(final=True)
        manifest = {
            "layers": self.layers,
            "d_model": self.model.cfg.d_model,
            "n_tokens": n_tokens,
            "shards": shards,
            "inputs": "blocks.{i}.hook_mlp_in",
            "targets": "blocks.{i}.hook_mlp_out",
        }
        # Written last: a directory without it is an unfinished cache and is rebuilt.
        (self.cache_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest

    def _cached_chunks(self, gen: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        shards = self.build_cache()["shards"]
        order = torch.randperm(len(shards), generator=gen) if self.shuffle else range(len(shards))
        for k in order:
            t = load_file(str(self.cache_dir / shards[int(k)]))
            yield t["mlp_in"], t["mlp_out"]

    # ------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        source = self._cached_chunks(gen) if self.cache_dir is not None else self._model_chunks()
        bx: list[Tensor] = []
        by: list[Tensor] = []
        n = 0
        for x, y in source:
            bx.append(x)
            by.append(y)
            n += x.shape[0]
            if n >= self.buffer_tokens:
                x_all, y_all = torch.cat(bx), torch.cat(by)
                keep = yield from self._emit(x_all, y_all, gen, final=False)
                bx, by = [keep[0]], [keep[1]]
                n = keep[0].shape[0]
        if n:
            yield from self._emit(torch.cat(bx), torch.cat(by), gen, final=True)

    def _emit(self, x: Tensor, y: Tensor, gen: torch.Generator, final: bool):
        """Yield the buffer in shuffled batches; return what is left (less than one
        batch), which goes on in the next buffer (or out as a last, smaller batch)."""
        if self.shuffle:
            perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
            x, y = x[perm], y[perm]
        B = self.batch_tokens
        full = (x.shape[0] // B) * B
        for s in range(0, full, B):
            yield x[s : s + B], y[s : s + B]
        if final and full < x.shape[0]:
            yield x[full:], y[full:]
        return x[full:], y[full:]


@torch.no_grad()
def initialize_from_data(tc: Transcoder, x: Tensor, y: Tensor) -> None:
    """Data-dependent init of a transcoder about to be fit on (x, y) (N, d_model):
    b_dec = mean(y), and the encoder scaled so that the initial output has the
    spread of y (the decoder rows stay unit norm)."""
    tc.b_dec.copy_(y.float().mean(0))
    lat = tc.encode(x.float())
    out = lat @ tc.W_dec
    scale = (y.float() - y.float().mean(0)).pow(2).sum().sqrt() / out.pow(2).sum().sqrt()
    if torch.isfinite(scale) and scale > 0:
        tc.W_enc.mul_(scale)
        tc.b_enc.mul_(scale)


class TranscoderFitModule(L.LightningModule):
    """Fits one transcoder per layer to (mlp_in, mlp_out) batches of MLPActivations.

    Loss per layer: normalized MSE (the batch's FVU) + the transcoder's aux losses
    (AuxK on the residual, JumpReLU L0), summed over layers. Adam with a linear
    warm-up over `warmup_steps` and a linear decay to 0 over the last
    `decay_fraction` of the trainer's max_steps. `history` keeps, per step, each
    layer's FVU and L0 (plain floats, for tests and reports)."""

    def __init__(
        self,
        transcoders: Mapping[int, Transcoder],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        decay_fraction: float = 0.2,
    ):
        super().__init__()
        self.layers = sorted(transcoders)
        self.transcoders = nn.ModuleDict({str(i): transcoders[i] for i in self.layers})
        self.lr, self.betas = lr, betas
        self.warmup_steps, self.decay_fraction = warmup_steps, decay_fraction
        self.history: list[dict[str, float]] = []
        self.tokens_seen = 0

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch  # (N, n_layers, d_model) each
        total = x.new_zeros((), dtype=torch.float32)
        row: dict[str, float] = {}
        for j, i in enumerate(self.layers):
            tc = self.transcoders[str(i)]
            xi, yi = x[:, j].float(), y[:, j].float()
            latents: list[Tensor] = []

            def keep(module, args, out, latents=latents):
                latents.append(out.detach())

            handle = tc.hook_latents.register_forward_hook(keep)
            try:
                out = tc(xi, target=yi)
            finally:
                handle.remove()
            mse = normalized_mse(out, yi)
            aux = {k: w * v for k, (w, v) in tc.aux_losses.items() if w}
            total = total + mse + sum(aux.values())
            l0 = float((latents[0] != 0).sum(-1).float().mean())
            row[f"fvu.L{i}"], row[f"l0.L{i}"] = float(mse.detach()), l0
            self.log(f"train/fvu.L{i}", mse, batch_size=x.shape[0])
            self.log(f"train/l0.L{i}", l0, batch_size=x.shape[0])
            for k, v in aux.items():
                self.log(f"train/{k}.L{i}", v, batch_size=x.shape[0])
        self.log("train/loss", total, prog_bar=True, batch_size=x.shape[0])
        self.history.append(row)
        self.tokens_seen += x.shape[0]
        return total

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        for tc in self.transcoders.values():
            tc.after_optimizer_step()  # unit-norm decoder rows, right after the step

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.transcoders.parameters(), lr=self.lr, betas=self.betas)
        total = self.trainer.max_steps if self.trainer is not None else -1
        warm, decay_from = self.warmup_steps, None
        if total and total > 0 and self.decay_fraction > 0:
            decay_from = int(total * (1 - self.decay_fraction))

        def factor(step: int) -> float:
            f = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
            if decay_from is not None and step >= decay_from:
                f *= max(0.0, (total - step) / max(1, total - decay_from))
            return f

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit_transcoders(
    model: Transformer,
    batches: Iterable,
    layers: Sequence[int],
    cfg: TranscoderConfig | FFNConfig | None = None,
    max_steps: int = 1000,
    lr: float = 1e-3,
    batch_tokens: int = 1024,
    buffer_tokens: int = 32768,
    cache_dir: str | Path | None = None,
    init_from_data: bool = True,
    seed: int = 0,
    trainer_kwargs: dict[str, Any] | None = None,
    return_module: bool = False,
):
    """Fit a transcoder to each of `layers`' MLPs of the frozen `model`.

    batches: token batches (see MLPActivations), re-iterable if `max_steps` needs
    more than one pass. cfg: the transcoders' TranscoderConfig (default: its
    defaults). trainer_kwargs: more lightning.Trainer arguments (a logger, ...).
    Returns {layer: Transcoder} in eval mode on the model's device (with
    return_module=True, also the TranscoderFitModule, whose `history` has the
    per-step FVU and L0).
    """
    if isinstance(cfg, FFNConfig):
        cfg = cfg.transcoder
    cfg = copy.deepcopy(cfg) if cfg is not None else TranscoderConfig()
    torch.manual_seed(seed)
    device = model.device
    tcs = {i: Transcoder(model.cfg.d_model, cfg).to(device) for i in layers}
    data = MLPActivations(
        model, batches, layers, batch_tokens, buffer_tokens, seed=seed, cache_dir=cache_dir
    )
    if init_from_data:
        x, y = next(iter(data))
        for j, i in enumerate(layers):
            initialize_from_data(tcs[i], x[:, j], y[:, j])
    module = TranscoderFitModule(tcs, lr=lr)
    kwargs: dict[str, Any] = dict(
        max_steps=max_steps,
        max_epochs=-1,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    kwargs.update(trainer_kwargs or {})
    trainer = L.Trainer(**kwargs)
    trainer.fit(module, DataLoader(data, batch_size=None))
    out = {i: tcs[i].to(device).eval() for i in layers}
    return (out, module) if return_module else out


def splice(model: Transformer, transcoders: Mapping[int, Transcoder]) -> Transformer:
    """A copy of `model` with the MLPs of the given layers replaced by the
    transcoders (copied too). Its config's `ffn_by_layer` names the transcoder
    layers, so `archs.save_pretrained` / `load_pretrained` treat it as any other
    checkpoint. Returned in eval mode, on the model's device and dtype."""
    cfg = copy.deepcopy(model.cfg)
    for i, tc in transcoders.items():
        if not 0 <= i < cfg.n_layers:
            raise ValueError(f"splice: layer {i} not in 0..{cfg.n_layers - 1}")
        if tc.d_model != cfg.d_model:
            raise ValueError(
                f"splice: layer {i}'s transcoder has d_model {tc.d_model}, not {cfg.d_model}"
            )
        cfg.ffn_by_layer[str(i)] = FFNConfig(kind="transcoder", transcoder=copy.deepcopy(tc.cfg))
    param = next(model.parameters())
    new = Transformer(cfg).to(device=param.device, dtype=param.dtype)
    state = {k: v for k, v in model.state_dict().items()}
    for i in transcoders:
        prefix = f"blocks.{i}.mlp."
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
        for k, v in transcoders[i].state_dict().items():
            state[prefix + k] = v
    new.load_state_dict(state, strict=True)
    new.tokenizer = getattr(model, "tokenizer", None)
    return new.eval()


__all__ = [
    "MLPActivations",
    "TranscoderFitModule",
    "fit_transcoders",
    "initialize_from_data",
    "splice",
]
