"""Named hook points, TransformerLens-style, without global hook state.

A `HookPoint` is an identity module placed on an activation. Hooks are torch forward
hooks (forward pre-hooks and global module hooks run too) registered for the lifetime of a `with model.hooks(...)` block and removed in a
`finally`, so an exception in the body (or in a hook) never leaves one behind.

A hook function has the signature `fn(activation, hook) -> Tensor | None`; `hook.name`
is the hook point's name. Returning a tensor replaces the activation (patching,
ablation); returning None leaves it as it was.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _torch_module

HookFn = Callable[[Tensor, "HookPoint"], Tensor | None]
NameFilter = str | Sequence[str] | Callable[[str], bool] | None


class HookPoint(nn.Module):
    """Identity on an activation; `name` is set by the root model."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str = ""

    def forward(self, x: Tensor) -> Tensor:
        return x

    @property
    def has_hooks(self) -> bool:
        """Whether any hook would see this point's activation: its own forward or
        forward pre-hooks, or torch's global module hooks."""
        return bool(
            self._forward_hooks
            or self._forward_pre_hooks
            or _torch_module._global_forward_hooks
            or _torch_module._global_forward_pre_hooks
        )

    def __call__(self, x: Tensor) -> Tensor:
        # Skip nn.Module's call machinery when nothing listens: hook points sit on
        # the hot path a dozen times per block.
        if self.has_hooks:
            return super().__call__(x)
        return x

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


def _matcher(names: NameFilter) -> Callable[[str], bool]:
    """A predicate over hook names: a name, a glob ('blocks.*.hook_resid_post'),
    a list of either, or a callable. None matches everything."""
    if names is None:
        return lambda _: True
    if callable(names):
        return names
    patterns = [names] if isinstance(names, str) else list(names)
    return lambda n: any(n == p or fnmatch.fnmatchcase(n, p) for p in patterns)


class ActivationCache(dict):
    """Cached activations keyed by hook name.

    Besides full names, accepts TransformerLens shorthand: `cache["resid_post", 1]`
    is `cache["blocks.1.hook_resid_post"]`, `cache["pattern", 0]` is
    `cache["blocks.0.attn.hook_pattern"]`, `cache["latents", 2]` is
    `cache["blocks.2.mlp.hook_latents"]`: the block's hook of that name, else its
    attention's, else its feed-forward slot's, whatever the kind.
    """

    def __getitem__(self, key):
        if isinstance(key, tuple):
            short, layer = key
            # the block's own hook, else its attention's, else its FFN's (any kind's)
            for where in ("", "attn.", "mlp."):
                name = f"blocks.{layer}.{where}hook_{short}"
                if name in self:
                    return super().__getitem__(name)
            raise KeyError(
                f"{key!r}: no blocks.{layer}.[attn.|mlp.]hook_{short} in the cache; cached "
                f"names: {', '.join(sorted(self)) or 'none'}"
            )
        try:
            return super().__getitem__(key)
        except KeyError:
            raise KeyError(
                f"{key!r} is not in the cache; cached names: {', '.join(sorted(self)) or 'none'}"
            ) from None


class HookedModule(nn.Module):
    """Mixin for a root model: finds its hook points and runs with hooks or a cache."""

    def setup_hooks(self) -> None:
        """Name every HookPoint after its module path. Call at the end of __init__."""
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module

    @property
    def hook_names(self) -> list[str]:
        return list(self.hook_dict)

    def _points(self, names: NameFilter) -> list[HookPoint]:
        match = _matcher(names)
        points = [hp for n, hp in self.hook_dict.items() if match(n)]
        if not points:
            raise KeyError(
                f"no hook point matches {names!r}; names look like "
                f"{', '.join(self.hook_names[:6])}, ... (model.hook_names lists all)"
            )
        return points

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[NameFilter, HookFn]]) -> Iterator[HookedModule]:
        """Run the body with the given (name or filter, fn) hooks attached.

        Every hook is removed on exit, whether the body returns or raises.
        """
        handles = []
        try:
            for names, fn in fwd_hooks:
                for hp in self._points(names):
                    handles.append(hp.register_forward_hook(_wrap(fn)))
            yield self
        finally:
            for h in handles:
                h.remove()

    def reset_hooks(self) -> None:
        """Remove every hook from every hook point (for hooks added by hand)."""
        for hp in self.hook_dict.values():
            hp._forward_hooks.clear()
            hp._forward_pre_hooks.clear()

    def run_with_hooks(self, *args, fwd_hooks: Iterable[tuple[NameFilter, HookFn]] = (), **kwargs):
        with self.hooks(fwd_hooks):
            return self(*args, **kwargs)

    def run_with_cache(
        self,
        *args,
        names_filter: NameFilter = None,
        device: torch.device | str | None = None,
        detach: bool = True,
        **kwargs,
    ) -> tuple[Tensor, ActivationCache]:
        """Forward pass that also returns the activations at the hook points that
        `names_filter` selects (all of them if None).

        Returns (logits, cache); cache[name] has the activation's own shape, e.g.
        (batch, pos, d_model) for the residual stream.
        """
        cache = ActivationCache()

        def save(act: Tensor, hook: HookPoint) -> None:
            a = act.detach() if detach else act
            cache[hook.name] = a.to(device) if device is not None else a

        match = _matcher(names_filter)
        points = [n for n in self.hook_dict if match(n)]
        with self.hooks([(points, save)] if points else []):
            out = self(*args, **kwargs)
        return out, cache


def _wrap(fn: HookFn):
    def torch_hook(module: HookPoint, inputs, output):
        return fn(output, module)

    return torch_hook
