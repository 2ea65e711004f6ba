"""The errors glassbox raises on bad input, each said in one line.

    GlassboxError      base: the user can act on it; the command line prints its
                       message as one line on stderr, with no traceback
    ConfigError        a config value that cannot work (key, value, what is allowed)
    CheckpointError    a checkpoint file that cannot be loaded (file, what was found,
                       what was expected)
    ArgumentError      an argument of a public function that cannot work (generation's
                       prompt, token counts, temperature, top-k)

They sit below every other module of archs/ (the FFN kinds check their own config
sections with ConfigError, and archs.config builds on the kinds), and are
re-exported by `glassbox.archs`. The three derive from ValueError as well, so code
that caught ValueError before keeps working; training's NonFiniteError (a run that
diverged) is a GlassboxError too.
"""

from __future__ import annotations

import math
from pathlib import Path


def one_line(text: str) -> str:
    """Text with its line breaks folded into spaces (an error message is one line)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class GlassboxError(Exception):
    """Bad input the user can act on; the message is one line."""


class ConfigError(GlassboxError, ValueError):
    """A config value that cannot work. The message is one line naming the key,
    the value given and what is allowed."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(one_line(f"config error: {key}={value!r}: {allowed}"))


class CheckpointError(GlassboxError, ValueError):
    """A checkpoint file that cannot be loaded. One line: the file, what is wrong in
    it (the key or tensor), and what was expected or what to do."""

    def __init__(self, file: str | Path, problem: str):
        self.file, self.problem = str(file), problem
        super().__init__(one_line(f"checkpoint error: {file}: {problem}"))


class ArgumentError(GlassboxError, ValueError):
    """An argument value that cannot work: `name=value: what is allowed`."""

    def __init__(self, name: str, value, allowed: str):
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(one_line(f"{name}={value!r}: {allowed}"))


def check_positive(key: str, value: float) -> None:
    """ConfigError unless `value` is a finite number > 0."""
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(key, value, "must be a finite number > 0")


def check_non_negative(key: str, value: float, note: str = "") -> None:
    """ConfigError unless `value` is a finite number >= 0 (`note`: what 0 means)."""
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(key, value, f"must be a finite number >= 0{note}")


def check_fraction(key: str, value: float, closed_high: bool = False) -> None:
    """ConfigError unless 0 <= value < 1 (or <= 1 with closed_high)."""
    ok = 0 <= value <= 1 if closed_high else 0 <= value < 1
    if not (math.isfinite(value) and ok):
        raise ConfigError(key, value, f"must be in [0, 1{']' if closed_high else ')'}")
