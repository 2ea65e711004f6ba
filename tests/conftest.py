"""Tests run their tiny models on one CPU thread: faster than two for models this
small, and far faster when other processes share the cores (no thread spinning).

The files holding a test marked slow are collected first, each file's own order and
the others' kept: `make test` gives each of its workers (one per core) a file at a
time (pytest-xdist's --dist loadfile), so a long file collected last would run alone
at the end with the other core idle."""

import torch

torch.set_num_threads(1)


def pytest_collection_modifyitems(session, config, items) -> None:
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: False (slow) first
