"""Band-math expressions parsed against a whitelist, never evaluated.

:func:`parse` reads ``"(b2 - b1) / (b2 + b1)"`` with :mod:`ast` and turns it
into a small tree of tuples, refusing anything outside the language in one
line that names the offending part.  The language is numpy's arithmetic on
bands ``b1, b2, ...``: ``+ - * / // % **``, comparisons, ``& | ^ ~``,
unary ``- +``, the functions in :data:`FUNCTIONS` (also spelt
``numpy.NAME`` or ``np.NAME``, as in ``gdal_calc.py`` expressions), the
constants in :data:`CONSTANTS`, and numbers.  Attribute access, other calls,
subscripts, lambdas, comprehensions, ``and``/``or``/``not``, conditional
expressions, keyword arguments and names other than these are refused.

Nodes: ``("band", index0)``, ``("const", value)``, ``("unary", op, x)``,
``("binary", op, a, b)``, ``("call", name, args...)``.
"""

from __future__ import annotations

import ast
import math
import re
from typing import Any

#: Functions and how many arguments each takes.
FUNCTIONS = {
    "where": 3, "clip": 3, "minimum": 2, "maximum": 2, "arctan2": 2, "hypot": 2,
    "sqrt": 1, "log": 1, "log10": 1, "log2": 1, "exp": 1, "abs": 1, "absolute": 1,
    "floor": 1, "ceil": 1, "round": 1, "rint": 1, "sin": 1, "cos": 1, "tan": 1,
    "arcsin": 1, "arccos": 1, "arctan": 1, "sinh": 1, "cosh": 1, "tanh": 1,
    "degrees": 1, "radians": 1,
}  # fmt: skip

#: Named constants (weak Python floats, as numpy sees them).
CONSTANTS = {"pi": math.pi, "e": math.e, "nan": math.nan, "inf": math.inf}

_BINARY = {
    ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "true_divide",
    ast.FloorDiv: "floor_divide", ast.Mod: "remainder", ast.Pow: "power",
    ast.BitAnd: "bitwise_and", ast.BitOr: "bitwise_or", ast.BitXor: "bitwise_xor",
}
_COMPARE = {
    ast.Lt: "less", ast.LtE: "less_equal", ast.Gt: "greater", ast.GtE: "greater_equal",
    ast.Eq: "equal", ast.NotEq: "not_equal",
}
_UNARY = {ast.USub: "negative", ast.UAdd: "positive", ast.Invert: "invert"}
_BAND = re.compile(r"b([1-9][0-9]*)")
_MAX_NODES = 500


class ExpressionError(ValueError):
    """An expression outside the language (the message names the part)."""


def parse(text: str) -> tuple:
    """The tree of ``text``, or :class:`ExpressionError` naming what is refused."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("expr is empty; give an expression over b1, b2, ...")
    if len(text) > 10_000:
        raise ExpressionError("expr is longer than 10000 characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"expr {text!r} is not an expression: {exc.msg}") from None
    count = sum(1 for _ in ast.walk(tree))
    if count > _MAX_NODES:
        raise ExpressionError(f"expr has {count} parts; at most {_MAX_NODES}")
    return _node(tree.body, text)


def bands_read(node: tuple) -> set[int]:
    """0-based indices of the bands ``node`` reads."""
    if node[0] == "band":
        return {node[1]}
    found: set[int] = set()
    for child in node[2:] if node[0] in ("unary", "binary", "call") else ():
        found |= bands_read(child)
    return found


def _part(node: ast.AST, text: str) -> str:
    return ast.get_source_segment(text, node) or type(node).__name__


def _refuse(node: ast.AST, text: str, why: str) -> ExpressionError:
    hint = " (functions: " + ", ".join(sorted(FUNCTIONS)) + ")" if why == "unknown function" else ""
    return ExpressionError(f"expr: {why}: {_part(node, text)!r}{hint}")


def _node(node: ast.AST, text: str) -> tuple:
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return ("binary", _BINARY[type(node.op)], _node(node.left, text), _node(node.right, text))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return ("unary", _UNARY[type(node.op)], _node(node.operand, text))
    if isinstance(node, ast.Compare):
        if len(node.ops) != 1:
            raise _refuse(node, text, "chained comparisons are ambiguous on arrays; "
                                      "combine single comparisons with & and |")
        op = _COMPARE.get(type(node.ops[0]))
        if op is None:
            raise _refuse(node, text, f"{type(node.ops[0]).__name__} is not a comparison it knows")
        return ("binary", op, _node(node.left, text), _node(node.comparators[0], text))
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or (isinstance(value, (int, float)) and not isinstance(
                value, complex)):
            return ("const", value)
        raise _refuse(node, text, "only numbers are allowed as literals")
    if isinstance(node, ast.Name):
        return _name(node, text)
    if isinstance(node, ast.Call):
        return _call(node, text)
    if isinstance(node, (ast.BoolOp,)) or (
        isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
    ):
        raise _refuse(node, text, "and/or/not do not work on arrays; use &, | and ~")
    if isinstance(node, ast.IfExp):
        raise _refuse(node, text, "conditional expressions are not allowed; use where(c, x, y)")
    if isinstance(node, ast.Attribute):
        raise _refuse(node, text, "attribute access is not allowed")
    if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
                         ast.GeneratorExp)):
        raise _refuse(node, text, f"{type(node).__name__.lower()} is not allowed")
    raise _refuse(node, text, f"{type(node).__name__} is not allowed")


def _name(node: ast.Name, text: str) -> tuple:
    name = node.id
    band = _BAND.fullmatch(name)
    if band:
        return ("band", int(band.group(1)) - 1)
    if name in CONSTANTS:
        return ("const", CONSTANTS[name])
    if name in ("True", "False"):
        return ("const", name == "True")
    if name in FUNCTIONS:
        raise _refuse(node, text, f"{name} is a function; call it")
    raise _refuse(node, text, "unknown name (bands are b1, b2, ...; constants: "
                              + ", ".join(CONSTANTS) + ")")


def _function_name(func: ast.AST, text: str) -> str:
    if isinstance(func, ast.Name) and func.id in FUNCTIONS:
        return func.id
    # numpy.where / np.where, as gdal_calc.py expressions often spell it.
    if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id in ("numpy", "np") and func.attr in FUNCTIONS):
        return func.attr
    if isinstance(func, ast.Attribute):
        raise _refuse(func, text, "attribute access is not allowed")
    raise _refuse(func, text, "unknown function")


def _call(node: ast.Call, text: str) -> tuple:
    name = _function_name(node.func, text)
    if node.keywords:
        raise _refuse(node, text, "keyword arguments are not allowed")
    if any(isinstance(a, ast.Starred) for a in node.args):
        raise _refuse(node, text, "starred arguments are not allowed")
    want = FUNCTIONS[name]
    if len(node.args) != want:
        raise _refuse(node, text, f"{name} takes {want} argument{'s' if want > 1 else ''}, "
                                  f"got {len(node.args)}")
    if name == "absolute":
        name = "abs"
    return ("call", name, *(_node(a, text) for a in node.args))


def describe(node: tuple) -> str:
    """Text of a tree (for messages and tokens)."""
    kind = node[0]
    if kind == "band":
        return f"b{node[1] + 1}"
    if kind == "const":
        return repr(node[1])
    if kind == "unary":
        return f"{node[1]}({describe(node[2])})"
    args: Any = ", ".join(describe(c) for c in node[2:])
    return f"{node[1]}({args})"
