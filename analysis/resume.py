"""Scoring that survives an interruption: a long analysis saves each finished part of
its report, and the next call under the same key reads those parts back instead of
computing them again.

Scoring one run of the ladder's rung M takes one to two hours on a CPU core, rung L's
several: longer than a job may live on a shared or preemptible machine. Every part is a
deterministic function of the model and the data (each analysis draws from its own
seeded generator, never the global one), so a part read back is the part computed, and
a resumed report is the uninterrupted one.

    with saved_parts(run_dir / "analysis" / "parts.json", key) as store:
        analyze(...)                 # whose parts call part(name, fn)
    store.reused_seconds             # what the parts read back had cost when computed
    # parts.log beside it: a timestamped line per part finished, per start and resumption

    part("trained", lambda: report_of(model))   # fn() or its saved copy, as JSON holds it

Parts nest: a part computed inside another is saved under "outer/inner", and dropped
from the file once the outer one is saved. Without saved_parts (`glassbox analyze`),
part(name, fn) is fn(). With it, a part's value is its JSON copy whether computed or
read back (analysis.jsonable.plain: tensors and tuples as lists, keys as strings; nan
and infinities kept, as JSON's NaN and Infinity): the reports are JSON in the end, and
a part must not be used before then in a way its copy would change. The key says what
the parts depend on (glassbox.scoring: the checkpoint, the scoring settings, the
analysis version); a file under another key, or one that cannot be read, is started
afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from glassbox.analysis.jsonable import plain

__all__ = ["PartStore", "part", "reused_seconds", "saved_parts"]


class PartStore:
    """The saved parts of one analysis: {"key": key, "parts": {name: {"value": ...,
    "seconds": s}}} in a JSON file, rewritten (atomically) after each part. Beside it,
    `log` (the file's name with .log) gets a line per part finished and per call, so
    a scoring that runs for hours shows where it is (`tail -f runs/*/analysis/parts.log`)."""

    def __init__(self, path: str | Path, key: str) -> None:
        self.path, self.key = Path(path), key
        self.log = self.path.with_suffix(".log")
        self.parts: dict[str, dict[str, Any]] = {}
        self.reused_seconds = 0.0  # the parts read back: their seconds when computed
        self.scope: tuple[str, ...] = ()
        self._seen: set[str] = set()  # names used in this call: two parts may not share one
        try:
            saved = json.loads(self.path.read_text())
            if saved.get("key") == key and isinstance(saved.get("parts"), dict):
                self.parts = saved["parts"]
        except (OSError, ValueError, AttributeError):
            pass  # none yet, or unreadable (a write cut short): start afresh
        self.path.parent.mkdir(parents=True, exist_ok=True)  # for the log and the parts
        if self.parts:
            done = sum(float(v["seconds"]) for v in self.parts.values())
            self.say(f"resumed: {len(self.parts)} saved parts read back ({done:,.0f} s)")
        else:
            self.say(f"started (key {key[:12]})")

    def say(self, line: str) -> None:
        """Append a timestamped line to the log (a progress record: never read back)."""
        with self.log.open("a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def name(self, name: str) -> str:
        full = "/".join((*self.scope, name))
        if full in self._seen:
            raise ValueError(f"part {full!r} is used twice in one analysis: name them apart")
        self._seen.add(full)
        return full

    def get(self, full: str) -> tuple[Any, float] | None:
        got = self.parts.get(full)
        return None if got is None else (got["value"], float(got["seconds"]))

    def put(self, full: str, value: Any, seconds: float) -> None:
        inner = f"{full}/"
        self.parts = {k: v for k, v in self.parts.items() if not k.startswith(inner)}
        self.parts[full] = {"value": value, "seconds": seconds}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({"key": self.key, "parts": self.parts}))
        os.replace(tmp, self.path)  # a write cut short leaves the last whole file
        self.say(f"{full}: {seconds:,.0f} s")

    def remove(self) -> None:
        """Delete the file (its analysis is saved whole); the log stays, a record of
        what each part cost."""
        self.path.unlink(missing_ok=True)
        self.say("saved whole")


_STORE: ContextVar[PartStore | None] = ContextVar("glassbox_parts", default=None)


@contextlib.contextmanager
def saved_parts(path: str | Path, key: str) -> Iterator[PartStore]:
    """Within it, part() saves to and reads from `path` under `key`."""
    store = PartStore(path, key)
    token = _STORE.set(store)
    try:
        yield store
    finally:
        _STORE.reset(token)


def part(name: str, fn: Callable[[], Any]) -> Any:
    """fn(), saved as `name` (within the enclosing parts' names) where saved_parts is
    active and read back from there when saved under the same key; outside
    saved_parts, fn() itself."""
    store = _STORE.get()
    if store is None:
        return fn()
    full = store.name(name)
    saved = store.get(full)
    if saved is not None:
        store.reused_seconds += saved[1]
        return saved[0]
    outer, reused0, t0 = store.scope, store.reused_seconds, time.perf_counter()
    store.scope = (*outer, name)
    try:
        value = json.loads(json.dumps(plain(fn())))
    finally:
        store.scope = outer
    # its cost whole: the time computing it and what its inner parts read back had cost
    seconds = time.perf_counter() - t0 + store.reused_seconds - reused0
    store.put(full, value, seconds)
    return value


def reused_seconds() -> float:
    """The seconds the parts read back so far had cost when computed (0 outside
    saved_parts)."""
    store = _STORE.get()
    return 0.0 if store is None else store.reused_seconds
