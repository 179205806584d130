"""A flow as a graph: Mermaid for Markdown and the browser, Graphviz DOT (and SVG)."""

from __future__ import annotations

import shutil
import subprocess

from callwright.flows.schema import Flow, Function, Transition


def edges(flow: Flow) -> list[tuple[str, str, str]]:
    """(from, to, label) for every transition; global functions start from '*'."""
    found: list[tuple[str, str, str]] = []

    def add(source: str, item: Transition | Function, label: str) -> None:
        for target in item.targets():
            found.append((source, target, label))
        for action in item.actions:
            if getattr(action, "on_error", None):
                found.append((source, action.on_error, f"{label} error"))

    for function in flow.global_functions:
        dtmf = f" [{function.dtmf}]" if function.dtmf else ""
        add("*", function, function.name + dtmf)
    for transition in flow.global_conditions:
        add("*", transition, f"if {transition.when}")
    for name, node in flow.nodes.items():
        for function in node.functions:
            add(name, function, function.name + (f" [{function.dtmf}]" if function.dtmf else ""))
        for transition in node.on_filled:
            add(name, transition, "filled" + (f" if {transition.when}" if transition.when else ""))
        for transition in node.conditions:
            add(name, transition, f"if {transition.when}")
        for key in ("no_match", "silence"):
            retry = getattr(node, key) or getattr(flow.defaults, key)
            if retry.then is not None:
                add(name, retry.then, key.replace("_", " "))
        for key in ("pre_actions", "post_actions"):
            for action in getattr(node, key):
                if getattr(action, "on_error", None):
                    found.append((name, action.on_error, "error"))
    return found


def _ends(flow: Flow) -> dict[str, str]:
    marks = {}
    for name, node in flow.nodes.items():
        for action in [*node.pre_actions, *node.post_actions]:
            if action.type in ("end_call", "end_conversation"):
                marks[name] = "end"
            elif action.type == "transfer":
                marks[name] = f"transfer {action.to}"
    return marks


def _label(text: str) -> str:
    return text.replace('"', "'")


def mermaid(flow: Flow) -> str:
    """The flow as a Mermaid `flowchart TD`, with the edges of `edges()`.

    A node that ends or transfers the call is a stadium labelled so; global functions
    leave from an "any node" box.
    """
    lines = ["flowchart TD", f"  start(( )) --> {flow.initial_node}"]
    ends = _ends(flow)
    for name in flow.nodes:
        shape = f'{name}(["{name}: {_label(ends[name])}"])' if name in ends else f"{name}[{name}]"
        lines.append(f"  {shape}")
    if flow.global_functions or flow.global_conditions:
        lines.append('  global{{"any node"}}')
    for source, target, label in edges(flow):
        source = "global" if source == "*" else source
        lines.append(f'  {source} -->|"{_label(label)}"| {target}')
    return "\n".join(lines) + "\n"


def dot(flow: Flow) -> str:
    """The flow as Graphviz DOT source, with the edges of `edges()`.

    A node that ends or transfers the call is a double octagon labelled so; global
    functions leave from an "any node" diamond.
    """
    lines = [f'digraph "{flow.name}" {{', "  rankdir=TB;", '  node [shape=box, style=rounded];',
             '  start [shape=point];', f'  start -> "{flow.initial_node}";']
    ends = _ends(flow)
    for name in flow.nodes:
        extra = f'\\n{_label(ends[name])}", shape=doubleoctagon' if name in ends else '"'
        lines.append(f'  "{name}" [label="{name}{extra}];')
    if flow.global_functions or flow.global_conditions:
        lines.append('  "*" [label="any node", shape=diamond];')
    for source, target, label in edges(flow):
        lines.append(f'  "{source}" -> "{target}" [label="{_label(label)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def svg(flow: Flow) -> str | None:
    """The graph as SVG, or None when Graphviz's `dot` is not installed."""
    binary = shutil.which("dot")
    if binary is None:
        return None
    return subprocess.run([binary, "-Tsvg"], input=dot(flow), capture_output=True, text=True,
                          check=True, timeout=30).stdout
