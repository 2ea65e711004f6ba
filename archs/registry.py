"""One registry idiom for every pluggable thing: FFN kinds (archs/ffn.py), MoE routers
(archs/routing.py), skills (training/data/skills/) and the report's metrics
(glassbox/metrics.py).

A registry maps a name to a thing, in registration order; the thing registers itself
in its own file, and may bring a config section (a dataclass) that a host config
dataclass then holds:

    FFN_KINDS = Registry("FFN kind")
    FFN_KINDS.hold_sections(FFNConfig)              # FFNConfig gets a field per section

    @FFN_KINDS.register("moe", config=MoEConfig)   # archs/moe.py
    class MoE(FFN): ...

    FFN_KINDS["moe"]         # the class; an unknown name is one line naming the known ones
    FFN_KINDS.names()        # ("dense", "moe", ...), in registration order
    FFN_KINDS.section("moe") # MoEConfig, or None for a thing without a section
    FFN_KINDS.unregister(n)  # a thing registered for a test, and its section

A host holds the sections in one of two layouts: nested (`ffn.moe.<key>`: one field
per thing, named like it, of its section's type) or flat (`moe.pool_size`: the
section's own fields become the host's, for routers whose keys sit beside the MoE's).
The section is checked where it is registered: a name or key that collides with the
host's own keys or another thing's is a ValueError before anything changes, and the
registry's `check` (say, a router's keys must default to off) runs too.

Keeping the host in step: the host class is rebuilt in place on each change (a fresh
dataclass with the host's own fields and the sections, whose generated methods and
field table are moved onto the host), so that every holder of the class (other
configs' field types, imports elsewhere, isinstance) sees the same schema; omegaconf
reads it from `dataclasses.fields` and the annotations. The built-in things are
registered by importing their package (`glassbox.archs` imports every kind, the
skills package every skill), so a config read after any import of the package sees
every built-in section.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, field, make_dataclass
from typing import Any, Generic, TypeVar

from glassbox.archs.errors import GlassboxError

T = TypeVar("T")


class UnknownName(GlassboxError, KeyError):
    """A name no thing is registered under. One line: what was looked up and the known
    names. A KeyError, so `except KeyError` around a lookup keeps working."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


def _same(a: Any, b: Any) -> bool:
    """Whether two registrations are the same thing (a class defined again when its
    module is re-run keeps its registration)."""
    if a is b or a == b:
        return True
    key = ("__module__", "__qualname__")
    return (
        isinstance(a, type)
        and isinstance(b, type)
        and all(getattr(a, k) == getattr(b, k) for k in key)
    )


def _describe(thing: Any) -> str:
    if isinstance(thing, type):
        return f"{thing.__module__}.{thing.__qualname__}"
    return repr(thing)[:80]


class _Host:
    """A config dataclass that holds the sections of one registry (see the module
    docstring): its own fields, then the sections (before the field `before`, if
    given), nested or flat."""

    def __init__(self, cls: type, flat: bool, before: str | None) -> None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"a section host must be a dataclass, not {cls!r}")
        self.cls, self.flat = cls, flat
        self.own: tuple[Field, ...] = tuple(dataclasses.fields(cls))
        self.own_types = typing.get_type_hints(cls)
        names = [f.name for f in self.own]
        if before is not None and before not in names:
            raise ValueError(f"{cls.__name__} has no field {before!r} to put sections before")
        self.split = names.index(before) if before is not None else len(names)
        self.extra_attrs: list[str] = []  # class attributes set for flat keys

    def keys_of(self, name: str, config: type) -> list[str]:
        """The host keys a section takes: its name (nested) or its fields (flat)."""
        return [f.name for f in dataclasses.fields(config)] if self.flat else [name]

    def check(self, name: str, config: type, others: Mapping[str, type]) -> None:
        own = {f.name for f in self.own}
        taken = {k: n for n, c in others.items() if n != name for k in self.keys_of(n, c)}
        for key in self.keys_of(name, config):
            if key in own:
                raise ValueError(
                    f"{name!r}: {self.cls.__name__} has a key {key!r} of its own already"
                )
            if key in taken:
                raise ValueError(f"{name!r}: {self.cls.__name__}.{key} is {taken[key]!r}'s already")

    def rebuild(self, sections: Mapping[str, type]) -> None:
        specs = [(f.name, self.own_types[f.name], _copy_field(f)) for f in self.own]
        extra = []
        for name, config in sections.items():
            if self.flat:
                hints = typing.get_type_hints(config)
                extra += [
                    (f.name, hints[f.name], _copy_field(f)) for f in dataclasses.fields(config)
                ]
            else:
                extra.append((name, config, field(default_factory=config)))
        specs[self.split : self.split] = extra
        fresh = make_dataclass(self.cls.__name__, specs)
        for attr in ("__init__", "__repr__", "__eq__", "__dataclass_fields__", "__match_args__"):
            setattr(self.cls, attr, fresh.__dict__[attr])
        self.cls.__annotations__ = {n: t for n, t, _ in specs}
        for attr in self.extra_attrs:  # plain defaults are class attributes, as dataclass does
            delattr(self.cls, attr)
        self.extra_attrs = [n for n, _, f in extra if f.default is not MISSING]
        for n, _, f in extra:
            if f.default is not MISSING:
                setattr(self.cls, n, f.default)


def _copy_field(f: Field) -> Field:
    if f.default is not MISSING:
        return field(default=f.default)
    if f.default_factory is not MISSING:
        return field(default_factory=f.default_factory)
    return field()


class Registry(Mapping[str, T], Generic[T]):
    """Name -> thing, in registration order. `what` names a thing in messages ("FFN
    kind"); `check(name, thing, config)` runs at each registration before anything
    changes (raise ValueError / TypeError, one line)."""

    def __init__(self, what: str, check: Callable[[str, T, type | None], None] | None = None):
        self.what = what
        self._check = check
        self._things: dict[str, T] = {}
        self._sections: dict[str, type] = {}
        self._hosts: list[_Host] = []

    # --- registering

    def register(self, name: str, thing: T | None = None, *, config: type | None = None) -> Any:
        """Register `thing` under `name` with its config section (a dataclass, or None);
        without `thing`, a decorator that registers what it decorates. Returns the
        thing. Registering the same thing again (its module re-run) replaces it in
        place; another thing under a taken name is a ValueError."""
        if thing is None:
            return lambda t: self.register(name, t, config=config)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} needs a non-empty name, not {name!r}")
        old = self._things.get(name)
        if old is not None and not _same(old, thing):
            raise ValueError(f"{self.what} {name!r} is taken by {_describe(old)}")
        if config is not None:
            if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
                raise TypeError(
                    f"the config of {self.what} {name!r} must be a dataclass, not {config!r}"
                )
            if not name.isidentifier():
                raise ValueError(
                    f"{self.what} {name!r} brings a section, so its name must be an identifier"
                )
            for host in self._hosts:
                host.check(name, config, self._sections)
        if self._check is not None:
            self._check(name, thing, config)
        self._things[name] = thing
        changed = self._sections.get(name) is not config
        if config is None:
            self._sections.pop(name, None)
        else:
            self._sections[name] = config
        if changed:
            self._rebuild()
        return thing

    def unregister(self, name: str) -> None:
        """Remove a thing and its section (one registered for a test); no-op if absent."""
        self._things.pop(name, None)
        if self._sections.pop(name, None) is not None:
            self._rebuild()

    def hold_sections(self, host: type, *, flat: bool = False, before: str | None = None) -> None:
        """Make the dataclass `host` hold every registered section, now and on each
        change: nested (a field per thing, named like it) or `flat` (the sections'
        fields), placed before the host's field `before` (None: after its own)."""
        h = _Host(host, flat, before)
        for name, config in self._sections.items():
            h.check(name, config, self._sections)
        self._hosts.append(h)
        h.rebuild(self._sections)

    def _rebuild(self) -> None:
        for host in self._hosts:
            host.rebuild(self._sections)

    # --- reading

    def __getitem__(self, name: str) -> T:
        try:
            return self._things[name]
        except (KeyError, TypeError):
            raise UnknownName(self.unknown(name)) from None

    def unknown(self, name: Any) -> str:
        """The one-line message for a name nothing is registered under."""
        return f"unknown {self.what} {name!r}: one of {', '.join(self._things) or '(none)'}"

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._things))

    def __len__(self) -> int:
        return len(self._things)

    def __contains__(self, name: object) -> bool:
        return name in self._things

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._things)

    def section(self, name: str) -> type | None:
        """The config section `name` brought (a dataclass), or None."""
        self[name]  # an unknown name is an error, not None
        return self._sections.get(name)

    def sections(self) -> dict[str, type]:
        """name -> section, for the things that brought one, in registration order."""
        return dict(self._sections)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._things)})"
