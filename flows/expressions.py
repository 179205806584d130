"""Conditions and checks written in the flow file: a small, safe expression language.

Python expression syntax, evaluated by `simpleeval` (no `eval`, no imports, no
dunder access), over the call's context: `slots`, `vars`, `caller`, `node`,
`flow`, and `value` inside a slot's `validate`. Missing names read as None, so
`slots.date is None` works before the date is known.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from datetime import date, datetime

from simpleeval import EvalWithCompoundTypes, InvalidExpression

NAMES = frozenset({"slots", "vars", "caller", "call", "node", "flow", "value", "retries"})


class ExpressionError(ValueError):
    """An expression is not valid (`check`) or failed to evaluate (`evaluate`)."""
    pass


class Namespace:
    """Read-only attribute and item access to a mapping; absent keys are None."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping):
        self._data = data

    def __getattr__(self, name: str):
        return wrap(self._data.get(name))

    def __getitem__(self, name: str):
        return wrap(self._data.get(name))

    def __contains__(self, name: str) -> bool:
        return name in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)


def wrap(value):
    """A mapping as a read-only `Namespace` (absent keys read as None); any other value as is."""
    return Namespace(value) if isinstance(value, Mapping) else value


def _now_time() -> str:
    return datetime.now().strftime("%H:%M")


FUNCTIONS = {
    "len": len, "str": str, "int": int, "float": float, "abs": abs, "min": min, "max": max,
    "round": round, "lower": lambda s: str(s).lower(), "now": _now_time,
    "today": lambda: date.today().isoformat(),
}


def check(expression: str) -> None:
    """Raise ExpressionError when the text is not a valid expression over known names."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression {expression!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in NAMES | FUNCTIONS.keys() | {
            "True", "False", "None"
        }:
            known = ", ".join(sorted(NAMES))
            raise ExpressionError(f"unknown name '{node.id}' in {expression!r} (use {known})")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ExpressionError(f"'{node.attr}' is not allowed in {expression!r}")
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.DictComp, ast.SetComp,
                             ast.GeneratorExp, ast.NamedExpr)):
            raise ExpressionError(f"{type(node).__name__} is not allowed in {expression!r}")


def evaluate(expression: str, context: Mapping, *, today: date | None = None):
    """`today()` is `today` where given (a run's, or a script's fixed date), else the clock's."""
    names = {key: wrap(value) for key, value in context.items()}
    functions = {**FUNCTIONS, "today": lambda: today.isoformat()} if today else FUNCTIONS
    evaluator = EvalWithCompoundTypes(names=names, functions=functions)
    try:
        return evaluator.eval(expression.strip())
    except (InvalidExpression, TypeError, ValueError, KeyError, ZeroDivisionError) as exc:
        raise ExpressionError(f"{expression!r} failed: {exc}") from None
