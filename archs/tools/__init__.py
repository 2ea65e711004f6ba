"""Symbolic tools a model calls from its token stream: the call and its result are
the explanation of the computation.

A `Tool` turns the argument text of a call into a `ToolResult` in three typed steps
(parse -> execute -> format). Anything that goes wrong is a `ToolError`, turned into
an error result by `Tool.run`, never an exception that stops generation. A
`ToolRegistry` maps tool names to tools and dispatches the text of a whole call
(`"calculator 1 2 + 3 4"`: the first word names the tool, the rest is its argument).

    registry = ToolRegistry([Calculator(), Lookup({"paris": {"country": "france"}})])
    registry.call("calculator 1 2 + 3 4").text          # '4 6'
    registry.call("lookup paris country").text    # 'france'

The generation runtime (`archs.tools.runtime`) executes calls as the model emits
them: see `generate_with_tools` and `format_trace`.
"""

from glassbox.archs.tools.base import Tool, ToolError, ToolRegistry, ToolResult, split_digits
from glassbox.archs.tools.calculator import Calculator, CalculatorLimits
from glassbox.archs.tools.lookup import KnowledgeBase, Lookup, as_knowledge_base
from glassbox.archs.tools.runtime import (
    CallMarkers,
    ToolCall,
    ToolForcer,
    ToolGenerationOutput,
    format_trace,
    generate_with_tools,
)

__all__ = [
    "Calculator",
    "CalculatorLimits",
    "CallMarkers",
    "KnowledgeBase",
    "Lookup",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolForcer",
    "ToolGenerationOutput",
    "ToolRegistry",
    "ToolResult",
    "as_knowledge_base",
    "format_trace",
    "generate_with_tools",
    "split_digits",
]
