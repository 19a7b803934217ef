"""A request checked against botocore's model of the service, before it is sent.

botocore ships each AWS API's shapes: which members an operation takes, which are required,
their types, and the ranges, lengths, patterns and enums the service enforces. botocore itself
checks only names, types, required members and minimums before a call and leaves the rest to
the service, which refuses after the money for the steps before it is spent. This walks a
request through the operation's input shape and returns every member the service would refuse,
with its path in the request (`inferenceConfig.temperature`), so the caller can name the config
key that set it. botocore is imported when a request is first checked (it comes with boto3).
"""

from __future__ import annotations

import datetime
import re
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=16)
def _service_model(service: str) -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def botocore_available() -> bool:
    try:
        import botocore  # noqa: F401
    except ImportError:
        return False
    return True


def request_problems(service: str, operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, what the service would refuse) for every member of `params`, per botocore's
    model of `service`'s `operation`; an empty list means the request is well formed."""
    shape = _service_model(service).operation_model(operation).input_shape
    problems: list[tuple[str, str]] = []
    _check(shape, params, "", problems)
    return problems


def _join(path: str, member: str) -> str:
    return f"{path}.{member}" if path else member


def _check(shape: Any, value: Any, path: str, problems: list[tuple[str, str]]) -> None:
    kind = shape.type_name
    meta = shape.metadata
    where = path or "(request)"
    if kind == "structure":
        if not isinstance(value, dict):
            problems.append((where, f"{value!r} is not a structure"))
            return
        for name in shape.required_members:
            if name not in value:
                problems.append((_join(path, name), "is required"))
        for name, member_value in value.items():
            if name not in shape.members:
                problems.append((_join(path, name), f"is not a member of {shape.name}"))
            else:
                _check(shape.members[name], member_value, _join(path, name), problems)
        return
    if kind == "list":
        if not isinstance(value, list | tuple):
            problems.append((where, f"{value!r} is not a list"))
            return
        _check_size(len(value), meta, where, "items", problems)
        for index, item in enumerate(value):
            _check(shape.member, item, f"{path}[{index}]", problems)
        return
    if kind == "map":
        if not isinstance(value, dict):
            problems.append((where, f"{value!r} is not a map"))
            return
        _check_size(len(value), meta, where, "entries", problems)
        for key, item in value.items():
            _check(shape.key, key, f"{path} key {key!r}", problems)
            _check(shape.value, item, f"{path}[{key!r}]", problems)
        return
    if kind == "string":
        if not isinstance(value, str):
            problems.append((where, f"{value!r} is not a string"))
            return
        _check_size(len(value), meta, where, "characters", problems)
        pattern = meta.get("pattern")
        if pattern and re.fullmatch(pattern, value) is None:
            shown = pattern if len(pattern) <= 80 else "in botocore's model"
            problems.append((where, f"{value!r} is not of the form the service takes (pattern {shown})"))
        enum = getattr(shape, "enum", None)
        if enum and value not in enum:
            problems.append((where, f"{value!r} is not one of {', '.join(enum)}"))
        return
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append((where, f"{value!r} is not a whole number"))
            return
        _check_range(value, meta, where, problems)
        return
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append((where, f"{value!r} is not a number"))
            return
        _check_range(value, meta, where, problems)
        return
    if kind == "boolean" and not isinstance(value, bool):
        problems.append((where, f"{value!r} is not true or false"))
    elif kind == "blob" and not isinstance(value, bytes | bytearray | str):
        problems.append((where, "is not bytes"))
    elif kind == "timestamp" and not isinstance(value, datetime.datetime | str | int | float):
        problems.append((where, f"{value!r} is not a time"))


def _check_size(size: int, meta: dict[str, Any], where: str, unit: str, problems: list[tuple[str, str]]) -> None:
    if "min" in meta and size < meta["min"]:
        problems.append((where, f"{size} {unit}, fewer than the {meta['min']} it needs"))
    if "max" in meta and size > meta["max"]:
        problems.append((where, f"{size} {unit}, more than the {meta['max']} it takes"))


def _check_range(value: float, meta: dict[str, Any], where: str, problems: list[tuple[str, str]]) -> None:
    low, high = meta.get("min"), meta.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            span = f"the service takes {low:g} to {high:g}"
        else:
            span = f"the service takes at least {low:g}" if low is not None else f"the service takes at most {high:g}"
        problems.append((where, f"{value:g} is out of range: {span}"))
