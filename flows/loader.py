"""Read and check a flow file; every problem names file:line:column and what to change."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from callwright.flows import expressions, schema, templates
from callwright.flows.schema import (
    FILL_SLOTS,
    EndAction,
    Flow,
    FunctionAction,
    LoadedFlow,
    RememberAction,
    SayAction,
    SetAction,
    SlotType,
    TransferAction,
    WebhookAction,
)
from callwright.flows.yamlpos import DuplicateKey, Position, load_with_positions


@dataclass(frozen=True)
class Problem:
    """One problem in a flow file, at a 1-based line and column; `str()` is `file:line:col: msg`."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class FlowFileError(ValueError):
    """A flow file cannot be used; `problems` lists every problem found, in file order."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load_flow(path: str | Path) -> LoadedFlow:
    """Read a flow file, check it, and import the handlers it declares.

    Args:
        path: The flow's YAML file.

    Returns:
        The flow, its version (the first 16 hex digits of its text's SHA-256) and its
        handlers, imported.

    Raises:
        FlowFileError: The file cannot be read, is not valid YAML, does not match the
            schema, or fails a check of meaning (unknown or unreachable nodes, invalid
            expressions, templates or regexes, handlers that cannot be imported). It
            lists every problem found, each with its position.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FlowFileError([Problem(str(path), 1, 1, f"cannot read the file: {exc}")]) from None
    return load_flow_text(data.decode("utf-8", errors="replace"), source=str(path))


def load_flow_text(text: str, *, source: str = "<flow>") -> LoadedFlow:
    """`load_flow` for a flow's YAML text.

    Args:
        text: The flow file's content.
        source: The file name that problems are reported under.

    Raises:
        FlowFileError: As for `load_flow`.
    """
    checker = _Checker(text, source)
    spec, handlers = checker.run()
    version = hashlib.sha256(text.encode()).hexdigest()[:16]
    return LoadedFlow(spec=spec, version=version, source=source, handlers=handlers)


_SLOT_TYPES = ", ".join(SlotType.__args__)
_ACTION_TYPES = ("tts_say, end_conversation, end_call, function, webhook, remember, transfer, "
                 "send_dtmf, set, clear, repeat")


def _field_names(model: type[BaseModel], seen: set | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names = set()
    for name, info in model.model_fields.items():
        names.add(info.alias or name)
        for arg in _model_args(info.annotation):
            names |= _field_names(arg, seen)
    return names


def _model_args(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found += _model_args(arg)
    for meta in getattr(annotation, "__metadata__", ()) or ():
        found += _model_args(meta)
    return found


_KNOWN_KEYS = sorted(_field_names(Flow))


class _Checker:
    def __init__(self, text: str, source: str):
        self.text = text
        self.source = source
        self.problems: list[Problem] = []
        self.values: dict[tuple, Position] = {}
        self.keys: dict[tuple, Position] = {}

    def problem(self, path: tuple, message: str, *, key: bool = False) -> None:
        position = None
        if key:
            position = self.keys.get(path)
        probe = path
        while position is None and probe:
            position = self.values.get(probe)
            probe = probe[:-1]
        position = position or self.values.get(()) or Position(1, 1)
        self.problems.append(Problem(self.source, position.line, position.column, message))

    def fail(self):
        self.problems.sort(key=lambda p: (p.line, p.column))
        raise FlowFileError(self.problems)

    def run(self) -> tuple[Flow, dict]:
        try:
            data, self.values, self.keys = load_with_positions(self.text)
        except DuplicateKey as exc:
            self.problems.append(Problem(self.source, exc.position.line, exc.position.column,
                                         f"duplicate key '{exc.key}': each key may appear once "
                                         "in a mapping; remove or rename one"))
            self.fail()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            hint = ""
            if any(w in str(exc.problem) for w in ("indent", "expected", "not allowed here")):
                hint = ("; check the indentation (spaces only, the same depth for keys of "
                        "one mapping) and that every key ends with ':'")
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            lines = self.text.splitlines()
            if "expected <block end>" in str(exc.problem) and mark:
                above = next((n for n in range(line - 1, 0, -1) if lines[n - 1].strip()), None)
                if above:
                    hint = (f"; this line's indentation does not match line {above} above it: "
                            "keys of one mapping start in the same column")
            if line <= len(lines) and "\t" in lines[line - 1][:column]:
                hint = "; YAML does not allow tabs for indentation: use spaces"
            self.problems.append(
                Problem(self.source, line, column, f"invalid YAML: {exc.problem}{hint}")
            )
            self.fail()
        if not isinstance(data, dict):
            self.problem((), "a flow file must be a mapping with 'name', 'initial_node', 'nodes'")
            self.fail()
        try:
            spec = Flow.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                self._schema_problem(error)
            self.fail()
        handlers = self._check(spec)
        if self.problems:
            self.fail()
        return spec, handlers

    # Schema errors --------------------------------------------------------------------

    def _schema_problem(self, error: dict) -> None:
        loc = tuple(error["loc"])
        path = self._data_path(loc)
        kind = error["type"]
        last = path[-1] if path else ""
        if kind == "extra_forbidden":
            close = difflib.get_close_matches(str(last), _KNOWN_KEYS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            self.problem(path, f"unknown key '{last}'{hint}", key=True)
        elif kind == "literal_error" and last == "type" and "slots" in path:
            self.problem(path, f"unknown slot type '{error['input']}': use one of {_SLOT_TYPES}")
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            found = error.get("input", {}).get("type") if isinstance(error.get("input"),
                                                                      dict) else None
            what = f"unknown action type '{found}'" if found else "an action needs a 'type'"
            self.problem(path, f"{what}: use one of {_ACTION_TYPES}")
        elif kind == "missing":
            self.problem(path[:-1], f"missing required key '{last}'")
        else:
            self.problem(path, f"{'.'.join(map(str, path)) or 'flow'}: {error['msg']}")

    def _data_path(self, loc: tuple) -> tuple:
        """pydantic's location without its union tags, as a path into the YAML data."""
        path: tuple = ()
        for part in loc:
            candidate = (*path, part)
            if candidate in self.values or candidate in self.keys:
                path = candidate
            elif isinstance(part, str) and not part.startswith(("function-", "str", "list")):
                if part in ("json", "validate") or part not in (
                    "tts_say", "end_conversation", "end_call", "function", "webhook", "remember",
                    "transfer", "send_dtmf", "set", "clear", "repeat", "Branch", "Transition",
                ):
                    path = candidate  # a missing key: point at its parent
        return path

    # Meaning --------------------------------------------------------------------------

    def _check(self, spec: Flow) -> dict:
        nodes = spec.nodes
        if spec.initial_node not in nodes:
            self._unknown_node(("initial_node",), spec.initial_node, nodes)
        self._check_slots(spec)
        edges: dict[str, set[str]] = {name: set() for name in nodes}
        global_targets: set[str] = set()
        for i, function in enumerate(spec.global_functions):
            global_targets |= self._check_function(spec, ("global_functions", i), function)
        for i, transition in enumerate(spec.global_conditions):
            if not isinstance(transition.transition_to, str):
                self.problem(("global_conditions", i, "transition_to"),
                             "a global condition leads to one node (its name)")
            global_targets |= self._check_transition(spec, ("global_conditions", i), transition)
        for retry in ("no_match", "silence"):
            then = getattr(spec.defaults, retry).then
            if then is not None:
                global_targets |= self._check_transition(
                    spec, ("defaults", retry, "then"), then)
        names_global = {f.name for f in spec.global_functions}
        self._unique([f.name for f in spec.global_functions], ("global_functions",))
        for name, node in nodes.items():
            base = ("nodes", name)
            targets = edges[name]
            self._unique([f.name for f in node.functions], (*base, "functions"))
            for i, function in enumerate(node.functions):
                if function.name in names_global:
                    self.problem((*base, "functions", i, "name"),
                                 f"function '{function.name}' is also a global function; "
                                 "rename one of them")
                targets |= self._check_function(spec, (*base, "functions", i), function)
            for key in ("pre_actions", "post_actions"):
                targets |= self._check_actions(spec, (*base, key), getattr(node, key))
            for key in ("on_filled", "conditions"):
                for i, transition in enumerate(getattr(node, key)):
                    targets |= self._check_transition(spec, (*base, key, i), transition)
            for key in ("no_match", "silence"):
                retry = getattr(node, key)
                if retry is not None:
                    self._template((*base, key, "say"), retry.say)
                    if retry.then is not None:
                        targets |= self._check_transition(spec, (*base, key, "then"), retry.then)
            self._template((*base, "say"), node.say)
            self._template((*base, "role_message"), node.role_message)
            for i, message in enumerate(node.task_messages):
                self._template((*base, "task_messages", i, "content"), message.content)
            for i, slot_name in enumerate(node.corrections):
                if spec.slot(slot_name) is None:
                    self.problem((*base, "corrections", i),
                                 f"'{slot_name}' is not a slot of this flow")
            if node.slots and not node.on_filled and not node.functions and not node.conditions:
                self.problem((*base, "slots"), f"node '{name}' collects slots but has no "
                             "'on_filled' (or functions/conditions) to leave it")
        if not any("unknown node" in p.message for p in self.problems):
            self._reachability(spec, edges, global_targets)  # else it would only echo them
        return self._handlers(spec)

    def _check_slots(self, spec: Flow) -> None:
        seen: dict[str, str] = {}
        for name, node in spec.nodes.items():
            for i, slot in enumerate(node.slots):
                path = ("nodes", name, "slots", i)
                if slot.name in seen:
                    self.problem((*path, "name"), f"slot '{slot.name}' is already collected in "
                                 f"node '{seen[slot.name]}'; slot names are unique per flow")
                seen[slot.name] = name
                if slot.type == "choice" and not slot.choices:
                    self.problem((*path, "type"), f"slot '{slot.name}' is a choice: list its "
                                 "options under 'choices'")
                if slot.pattern:
                    self._regex((*path, "pattern"), slot.pattern)
                self._expression((*path, "validate"), slot.validate_)
                self._template((*path, "prompt"), slot.prompt)
                self._template((*path, "invalid"), slot.invalid)

    def _check_function(self, spec: Flow, path: tuple, function) -> set[str]:
        if function.name == FILL_SLOTS:
            self.problem((*path, "name"), f"'{FILL_SLOTS}' is reserved for slot filling")
        if not function.description and not function.examples and not function.patterns \
                and not function.dtmf:
            self.problem(path, f"function '{function.name}' needs a 'description' (and "
                         "ideally 'examples') so callers and LLMs can reach it")
        for i, pattern in enumerate(function.patterns):
            self._regex((*path, "patterns", i), pattern)
        return self._check_transition(spec, path, function)

    def _check_transition(self, spec: Flow, path: tuple, transition) -> set[str]:
        self._expression((*path, "when"), transition.when)
        self._template((*path, "say"), transition.say)
        targets = self._check_actions(spec, (*path, "actions"), transition.actions)
        to = transition.transition_to
        if isinstance(to, str):
            self._node_ref(spec, (*path, "transition_to"), to)
        elif to is not None:
            for case, target in to.cases.items():
                self._node_ref(spec, (*path, "transition_to", "cases", case), target)
            if to.default:
                self._node_ref(spec, (*path, "transition_to", "default"), to.default)
        return targets | set(transition.targets())

    def _check_actions(self, spec: Flow, path: tuple, actions) -> set[str]:
        targets = set()
        for i, action in enumerate(actions):
            here = (*path, i)
            if isinstance(action, (SayAction, RememberAction)):
                self._template((*here, "text"), action.text)
            elif isinstance(action, (EndAction, TransferAction)):
                self._template((*here, "text"), action.text)
                if isinstance(action, TransferAction):
                    self._template((*here, "to"), action.to)
            elif isinstance(action, WebhookAction):
                self._template((*here, "url"), action.url)
            elif isinstance(action, SetAction):
                for key, expression in action.values.items():
                    self._expression((*here, "values", key), expression)
            elif isinstance(action, FunctionAction) and action.handler not in spec.handlers:
                known = ", ".join(spec.handlers) or "none declared"
                self.problem((*here, "handler"), f"handler '{action.handler}' is not declared "
                             f"under 'handlers' (declared: {known})")
            elif getattr(action, "type", "") == "clear":
                for j, name in enumerate(action.slots):
                    if spec.slot(name) is None:
                        self.problem((*here, "slots", j), f"'{name}' is not a slot of this flow")
            on_error = getattr(action, "on_error", None)
            if on_error:
                self._node_ref(spec, (*here, "on_error"), on_error)
                targets.add(on_error)
        return targets

    def _node_ref(self, spec: Flow, path: tuple, name: str) -> None:
        if name not in spec.nodes:
            self._unknown_node(path, name, spec.nodes)

    def _unknown_node(self, path: tuple, name: str, nodes) -> None:
        close = difflib.get_close_matches(name, list(nodes), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known nodes: {', '.join(nodes)}"
        self.problem(path, f"transition to unknown node '{name}': {hint}")

    def _reachability(self, spec: Flow, edges: dict[str, set[str]], always: set[str]) -> None:
        if spec.initial_node not in spec.nodes:
            return
        seen = {spec.initial_node} | (always & spec.nodes.keys())
        queue = deque(seen)
        while queue:
            for target in edges.get(queue.popleft(), ()):
                if target in spec.nodes and target not in seen:
                    seen.add(target)
                    queue.append(target)
        for name in spec.nodes:
            if name not in seen:
                self.problem(("nodes", name), f"node '{name}' is unreachable: no transition "
                             f"from '{spec.initial_node}' leads to it; add one or remove the node",
                             key=True)

    def _unique(self, names: list[str], path: tuple) -> None:
        seen = set()
        for i, name in enumerate(names):
            if name in seen:
                self.problem((*path, i, "name"), f"duplicate function '{name}'")
            seen.add(name)

    def _template(self, path: tuple, source: str | None) -> None:
        if source:
            try:
                templates.check(source)
            except templates.TemplateError as exc:
                self.problem(path, str(exc))

    def _expression(self, path: tuple, source: str | None) -> None:
        if source:
            try:
                expressions.check(source)
            except expressions.ExpressionError as exc:
                self.problem(path, str(exc))

    def _regex(self, path: tuple, pattern: str) -> None:
        try:
            re.compile(pattern)
        except re.error as exc:
            self.problem(path, f"invalid regex {pattern!r}: {exc}")

    def _handlers(self, spec: Flow) -> dict:
        resolved = {}
        for name, target in spec.handlers.items():
            module_name, _, attribute = target.partition(":")
            try:
                if not attribute:
                    raise ImportError("write it as 'package.module:function'")
                function = getattr(importlib.import_module(module_name), attribute)
                if not callable(function):
                    raise TypeError(f"{target} is not callable")
            except Exception as exc:
                self.problem(("handlers", name), f"handler '{name}' ({target}) cannot be "
                             f"imported: {exc}")
                continue
            resolved[name] = function
        return resolved


def schema_path() -> Path:
    """Where the committed JSON Schema of flow files is: `flow.schema.json`, beside this package."""
    return Path(schema.__file__).with_name("flow.schema.json")
