"""Reading a stack file: YAML -> Stack, or one error that names the file, the field and the fix."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from spec.stack import Stack


class StackFileError(Exception):
    """The stack file cannot be used as it is. The message says where and why."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def load_stack(path: str | Path) -> Stack:
    """Parse and validate a stack file. Raises StackFileError; never touches AWS."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise StackFileError(f"{file}: cannot read the stack file ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise StackFileError(f"{file}: YAML syntax error{where}: {problem}") from None
    if not isinstance(data, dict):
        raise StackFileError(f"{file}: expected a mapping of settings at the top level (name, env, network, ...)")
    try:
        return Stack.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = _field_path(tuple(p for p in err["loc"] if not str(p).startswith("function-")))
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key; check its spelling against `ecsflow schema`"
            elif err["type"] == "missing":
                message = "required field is missing"
            lines.append(f"  {field}: {message}")
        raise StackFileError(f"{file}: invalid stack file\n" + "\n".join(lines)) from None
