"""ConfigError: a config value that cannot work, said in one line.

It sits below every other module of archs/ (the FFN kinds check their own config
sections with it, and archs.config builds on the kinds), and is re-exported by
`glassbox.archs.config` and `glassbox.archs`.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work. The message is one line naming the key,
    the value given and what is allowed."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"config error: {key}={value!r}: {allowed}")
