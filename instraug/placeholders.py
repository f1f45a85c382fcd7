"""Placeholders: protect them during generation, and fill them safely when building the data set.

A seed instruction carries ``{...}`` expressions (``{text}``, ``{split_token.join(options)}``,
``{meta_data['relation']}``, ``{region[0]}``, ...). Before generation each is replaced, in order, by a
letter (``{A}``, ``{B}``, ...); identical expressions share a letter, so a repeated placeholder
survives the round trip (the official code overwrote its map entry and lost these). Filling never
evaluates text: the expression is parsed with ``ast`` and only these forms are accepted —
a name, ``SEP.join(name)`` with SEP a known constant or a string literal, ``name[int]`` and
``name['key']``. Anything else raises ``UnsafePlaceholder``.
"""

from __future__ import annotations

import ast
import re
import string
from collections import Counter

PLACEHOLDER = re.compile(r"\{.*?\}")

# The MultiInstruct builder's constants (SOURCES.md [D]: `MultiInstruct/instruction_gen.py`, lines 21-26).
CONSTANTS = {
    "options_token": "\n\n[Options]:",
    "split_token": "||||",
    "region_split_token": "||||",
    "region_token": "Regions: ",
    "image_token": "image",
}


class UnsafePlaceholder(ValueError):
    """A placeholder expression outside the supported forms (it is never evaluated)."""


def placeholders(text: str) -> list[str]:
    return PLACEHOLDER.findall(text)


def multiset(text: str) -> Counter:
    return Counter(placeholders(text))


def protect(text: str) -> tuple[str, dict[str, str]]:
    """Replace each distinct ``{expr}`` by ``{A}``, ``{B}``, ... (same expression, same letter)."""
    mapping: dict[str, str] = {}
    letters = iter(string.ascii_uppercase)

    def swap(match: re.Match) -> str:
        expr = match.group()
        if expr not in mapping:
            mapping[expr] = "{" + next(letters) + "}"
        return mapping[expr]

    return PLACEHOLDER.sub(swap, text), {v: k for k, v in mapping.items()}


def restore(text: str, mapping: dict[str, str]) -> str:
    """Map the letters back; letters the LLM invented stay as they are (the filter's R3 then rejects)."""
    return PLACEHOLDER.sub(lambda m: mapping.get(m.group(), m.group()), text)


def _value(node: ast.AST, fields: dict, expr: str):
    if isinstance(node, ast.Name):
        if node.id in fields:
            return fields[node.id]
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise UnsafePlaceholder(f"{expr}: no field or constant named {node.id!r}")
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        container, key = _value(node.value, fields, expr), node.slice.value
        if isinstance(key, (int, str)) and not isinstance(key, bool):
            try:
                return container[key]
            except (KeyError, IndexError, TypeError) as err:
                raise UnsafePlaceholder(f"{expr}: {key!r} not found ({err})") from err
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return -node.operand.value
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.UnaryOp):
        return _value(node.value, fields, expr)[_value(node.slice, fields, expr)]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "join"
        and len(node.args) == 1
        and not node.keywords
    ):
        sep = _value(node.func.value, fields, expr)
        items = _value(node.args[0], fields, expr)
        if isinstance(sep, str) and isinstance(items, (list, tuple)):
            return sep.join(str(x) for x in items)
    raise UnsafePlaceholder(
        f"{expr}: unsupported placeholder form ({type(node).__name__}); allowed: name, "
        "SEP.join(name), name[int], name['key']"
    )


def fill(template: str, fields: dict) -> str:
    """Fill every ``{expr}`` of ``template`` from ``fields`` (and CONSTANTS) without evaluating code."""

    def one(match: re.Match) -> str:
        expr = match.group()[1:-1].strip()
        try:
            node = ast.parse(expr, mode="eval").body
        except SyntaxError as err:
            raise UnsafePlaceholder(f"{{{expr}}}: not a placeholder expression ({err.msg})") from err
        value = _value(node, fields, "{" + expr + "}")
        if isinstance(value, (list, tuple, dict)):
            raise UnsafePlaceholder(f"{{{expr}}}: evaluates to a {type(value).__name__}, not text")
        return str(value)

    return PLACEHOLDER.sub(one, template)
