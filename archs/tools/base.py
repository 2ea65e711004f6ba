"""What every tool shares: the Tool interface, its result and error, the registry
that dispatches a call to a tool, and the digit spelling of numbers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class ToolError(Exception):
    """A call the tool cannot answer (bad syntax, unknown key, a bound exceeded).
    The message is shown to the user as the error of the call."""


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one call.

    tool: the tool's name (as written in the call); arguments: the argument text;
    value: the tool's typed answer (an int for the calculator, a string for lookup;
    None on error); text: the answer formatted for the token stream (None on
    error); error: what went wrong, or None.
    """

    tool: str
    arguments: str
    value: Any = None
    text: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def split_digits(text: str) -> str:
    """Write every digit as its own word: '-579 x12' -> '- 5 7 9 x 1 2'. The suite's
    word-level tokenizer spells numbers digit by digit."""
    out: list[str] = []
    for word in text.split():
        run = ""
        for ch in word:
            if ch in "0123456789":
                if run:
                    out.append(run)
                    run = ""
                out.append(ch)
            else:
                run += ch
        if run:
            out.append(run)
    return " ".join(out)


class Tool(ABC):
    """A symbolic tool. Subclasses set `name` and implement parse, execute, format;
    each raises ToolError for input it rejects. `run` chains them and never raises."""

    name: str = ""

    @abstractmethod
    def parse(self, arguments: str) -> Any:
        """Argument text -> typed arguments."""

    @abstractmethod
    def execute(self, args: Any) -> Any:
        """Typed arguments -> typed value."""

    @abstractmethod
    def format(self, value: Any) -> str:
        """Typed value -> text written into the token stream."""

    def run(self, arguments: str) -> ToolResult:
        """Parse, execute and format; any failure becomes an error result."""
        try:
            value = self.execute(self.parse(arguments))
            return ToolResult(self.name, arguments, value, self.format(value))
        except ToolError as e:
            return ToolResult(self.name, arguments, error=str(e))
        except Exception as e:  # a bug in a tool must not kill a generation batch
            return ToolResult(
                self.name, arguments, error=f"{self.name} failed: {type(e).__name__}: {e}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ToolRegistry:
    """Tools by name. `call(text)` dispatches one call's text, first word = tool name."""

    def __init__(self, tools: Iterable[Tool] = ()):
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> Tool:
        if not isinstance(tool, Tool):
            raise TypeError(f"register: expected a Tool, got {type(tool).__name__}")
        name = tool.name
        if not name or any(ch.isspace() for ch in name):
            raise ValueError(f"tool name {name!r} must be one non-empty word")
        if name in self._tools:
            raise ValueError(f"a tool named {name!r} is already registered")
        self._tools[name] = tool
        return tool

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise KeyError(f"no tool named {name!r}; registered: {', '.join(self.names)}") from None

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self):
        return iter(self._tools.values())

    def call(self, text: str) -> ToolResult:
        """Run the call written as `text` ('toolname arguments...'). Never raises."""
        name, _, arguments = text.strip().partition(" ")
        arguments = arguments.strip()
        if not name:
            return ToolResult("", "", error="empty call: no tool name")
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(self.names) or "none"
            return ToolResult(name, arguments, error=f"unknown tool {name!r} (known: {known})")
        return tool.run(arguments)

    def __repr__(self) -> str:
        return f"ToolRegistry({self.names})"
