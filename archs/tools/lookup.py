"""Knowledge-base lookup: the answer to (entity, relation) read from a symbolic table.

A call reads `lookup ENTITY RELATION` (two words, as in the suite's word-level
stream) or `lookup ENTITY | RELATION` (either side may then have spaces: `lookup New
York | population`). The knowledge base behind it is any of:

- the skill suite's knowledge graph, or any object with an
  `attribute(entity, relation)` method (`AttributeKB`);
- a mapping, nested `{entity: {relation: value}}` or flat `{(entity, relation): value}`;
- a user's table file (`TableKB.from_file`): CSV or JSON, either long
  (`entity, relation, value` columns / records) or wide (one row per entity, one
  column per relation, the first column, or the JSON key `entity`, naming the entity).

An unknown entity or relation is an error result naming what is known.
"""

from __future__ import annotations

import csv
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from glassbox.archs.tools.base import Tool, ToolError, split_digits

LONG_COLUMNS = ("entity", "relation", "value")


def _key(text: Any) -> str:
    """Keys compare with runs of whitespace collapsed ('New  York' == 'New York')."""
    return " ".join(str(text).split())


def _listing(names, limit: int = 10) -> str:
    names = sorted(names)
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class KnowledgeBase(ABC):
    """get(entity, relation) -> value, or ToolError naming what is unknown."""

    @abstractmethod
    def get(self, entity: str, relation: str) -> Any: ...


class TableKB(KnowledgeBase):
    """An in-memory table {entity: {relation: value}}; `source` names where it came from."""

    def __init__(self, table: Mapping[str, Mapping[str, Any]], source: str = "table"):
        self.source = source
        self.table: dict[str, dict[str, Any]] = {}
        for entity, row in table.items():
            if not isinstance(row, Mapping):
                raise ValueError(
                    f"{source}: the value of entity {entity!r} must be a mapping of "
                    f"relation -> value, got {type(row).__name__}"
                )
            for relation, value in row.items():
                self._add(entity, relation, value, where=f"entity {entity!r}")

    def _add(self, entity: Any, relation: Any, value: Any, where: str) -> None:
        e, r = _key(entity), _key(relation)
        if not e or not r:
            raise ValueError(f"{self.source}: {where}: empty entity or relation")
        row = self.table.setdefault(e, {})
        if r in row and row[r] != value:
            raise ValueError(
                f"{self.source}: {where}: ({e!r}, {r!r}) is given twice, "
                f"as {row[r]!r} and {value!r}"
            )
        row[r] = value

    def get(self, entity: str, relation: str) -> Any:
        row = self.table.get(_key(entity))
        if row is None:
            raise ToolError(f"unknown entity {entity!r} in {self.source}")
        if _key(relation) not in row:
            raise ToolError(
                f"entity {entity!r} has no relation {relation!r} in {self.source} "
                f"(it has: {_listing(row)})"
            )
        return row[_key(relation)]

    @property
    def entities(self) -> list[str]:
        return list(self.table)

    def __len__(self) -> int:
        return sum(len(row) for row in self.table.values())

    @classmethod
    def from_mapping(cls, mapping: Mapping, source: str = "mapping") -> TableKB:
        """{entity: {relation: value}} or {(entity, relation): value}."""
        if mapping and all(isinstance(k, tuple) for k in mapping):
            kb = cls({}, source)
            for k, value in mapping.items():
                if len(k) != 2:
                    raise ValueError(f"{source}: key {k!r} must be an (entity, relation) pair")
                kb._add(k[0], k[1], value, where=f"key {k!r}")
            return kb
        return cls(mapping, source)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TableKB:
        """A .csv or .json table (long or wide; see the module docstring)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no knowledge-base file at {path}")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return cls.from_csv(path)
        if suffix == ".json":
            return cls.from_json(path)
        raise ValueError(f"{path}: a knowledge-base table must be a .csv or .json file")

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> TableKB:
        path = Path(path)
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        rows = [r for r in rows if any(cell.strip() for cell in r)]
        if not rows:
            raise ValueError(f"{path}: empty CSV (expected a header row)")
        header = [h.strip() for h in rows[0]]
        kb = cls({}, str(path))
        long = sorted(h.lower() for h in header) == sorted(LONG_COLUMNS)
        if long:
            idx = {h.lower(): i for i, h in enumerate(header)}
        elif len(header) < 2 or any(not h for h in header):
            raise ValueError(
                f"{path}: header {header!r}: expected the columns entity, relation, value, "
                "or an entity column followed by one named column per relation"
            )
        for line, row in enumerate(rows[1:], start=2):
            if len(row) != len(header):
                raise ValueError(
                    f"{path}: line {line} has {len(row)} cells, the header has {len(header)}"
                )
            row = [cell.strip() for cell in row]
            if long:
                kb._add(row[idx["entity"]], row[idx["relation"]], row[idx["value"]], f"line {line}")
            else:
                for relation, cell in zip(header[1:], row[1:]):
                    if cell:  # an empty cell: the entity has no such relation
                        kb._add(row[0], relation, cell, f"line {line}")
        return kb

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> TableKB:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
        if isinstance(data, dict):
            return cls(data, str(path))
        if not isinstance(data, list):
            raise ValueError(
                f"{path}: expected an object {{entity: {{relation: value}}}} or a list of records"
            )
        kb = cls({}, str(path))
        for i, rec in enumerate(data):
            where = f"record {i}"
            if not isinstance(rec, dict) or "entity" not in rec:
                raise ValueError(f"{path}: {where} must be an object with an 'entity' key")
            if set(rec) == set(LONG_COLUMNS):
                kb._add(rec["entity"], rec["relation"], rec["value"], where)
            else:
                for relation, value in rec.items():
                    if relation != "entity" and value is not None:
                        kb._add(rec["entity"], relation, value, where)
        return kb


def _name_set(container) -> set[str] | None:
    """Names in an `entities` / `relations` attribute (a mapping, or an iterable of
    names or of objects with `.name`); None when that cannot be read."""
    if container is None:
        return None
    try:
        items = list(container.keys() if isinstance(container, Mapping) else container)
    except TypeError:
        return None
    names = set()
    for item in items:
        name = item if isinstance(item, str) else getattr(item, "name", None)
        if not isinstance(name, str):
            return None
        names.add(name)
    return names


class AttributeKB(KnowledgeBase):
    """Adapter for an object with `attribute(entity, relation)` (the skill suite's
    KnowledgeGraph). When the object also lists `entities` / `relations`, an unknown
    one is named as such; a KeyError/LookupError/ValueError or a None answer from
    `attribute` is an unknown fact."""

    def __init__(self, graph: Any, source: str | None = None):
        if not callable(getattr(graph, "attribute", None)):
            raise TypeError(f"{type(graph).__name__} has no attribute(entity, relation) method")
        self.graph = graph
        self.source = source or type(graph).__name__
        self._entities = _name_set(getattr(graph, "entities", None))
        self._relations = _name_set(getattr(graph, "relations", None))

    def get(self, entity: str, relation: str) -> Any:
        if self._entities is not None and entity not in self._entities:
            raise ToolError(f"unknown entity {entity!r} in {self.source}")
        if self._relations is not None and relation not in self._relations:
            raise ToolError(
                f"unknown relation {relation!r} in {self.source} "
                f"(known: {_listing(self._relations)})"
            )
        try:
            value = self.graph.attribute(entity, relation)
        except (LookupError, ValueError) as e:
            raise ToolError(f"no fact ({entity!r}, {relation!r}) in {self.source}: {e}") from None
        if value is None:
            raise ToolError(f"no fact ({entity!r}, {relation!r}) in {self.source}")
        return value


def as_knowledge_base(source: Any) -> KnowledgeBase:
    """A KnowledgeBase from: a KnowledgeBase, an object with attribute(entity,
    relation), a mapping, or the path of a .csv / .json table."""
    if isinstance(source, KnowledgeBase):
        return source
    if callable(getattr(source, "attribute", None)):
        return AttributeKB(source)
    if isinstance(source, Mapping):
        return TableKB.from_mapping(source)
    if isinstance(source, str | os.PathLike):
        return TableKB.from_file(source)
    raise TypeError(
        f"cannot use a {type(source).__name__} as a knowledge base: give an object with "
        "attribute(entity, relation), a mapping, or a .csv/.json path"
    )


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return " ".join(str(value).split())


class Lookup(Tool):
    """(entity, relation) -> value from a knowledge base.

    kb: anything `as_knowledge_base` accepts. name: the tool's name in calls (two
    lookups, e.g. the suite's graph and a user table, need two names). digit_tokens:
    write digits of the value as separate words ('1889' -> '1 8 8 9').
    separator: splits entity from relation when either has spaces.
    """

    def __init__(
        self,
        kb: Any,
        *,
        name: str = "lookup",
        digit_tokens: bool = False,
        separator: str = "|",
    ):
        self.name = name
        self.kb = as_knowledge_base(kb)
        self.digit_tokens = digit_tokens
        self.separator = separator

    def parse(self, arguments: str) -> tuple[str, str]:
        if self.separator and self.separator in arguments:
            parts = [_key(p) for p in arguments.split(self.separator)]
        else:
            parts = arguments.split()
        if len(parts) != 2 or not all(parts):
            raise ToolError(
                f"{self.name}: expected 'ENTITY RELATION' or 'ENTITY {self.separator} RELATION', "
                f"got {arguments[:80]!r}"
            )
        return parts[0], parts[1]

    def execute(self, args: tuple[str, str]) -> Any:
        try:
            return self.kb.get(*args)
        except ToolError as e:
            raise ToolError(f"{self.name}: {e}") from None

    def format(self, value: Any) -> str:
        text = format_value(value)
        return split_digits(text) if self.digit_tokens else text
