"""Frozen dataclasses <-> JSON, and their JSON Schema, driven by the type hints alone: what the manifest
(fastadasp/core/manifest.py) is read, written and published with."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable

# fail(where, what) -> the exception to raise, e.g. a one-line ManifestError naming the file and the fix.
Fail = Callable[[str, str], Exception]


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def to_json(value):
    if dataclasses.is_dataclass(value):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def _union_args(tp) -> tuple | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def from_json(tp, value, fail: Fail, where: str = ""):
    """`value` (parsed JSON) as type `tp` (dataclasses, lists, dicts, unions, scalars); a mismatch raises
    `fail(where, what)`, where names the key path ("'schedule.ratio_numerators'")."""
    union = _union_args(tp)
    if union is not None:
        if value is None and type(None) in union:
            return None
        errors = []
        for option in (t for t in union if t is not type(None)):
            try:
                return from_json(option, value, fail, where)
            except Exception as exc:  # the error `fail` made for this option
                errors.append(exc)
        raise errors[0] if errors else fail(where, "must not be null")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail(where, f"must be an object, not {type(value).__name__}")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            key = f"{where}.{f.name}" if where else f.name
            if f.name not in value:
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                    continue
                raise fail(f"'{key}'", "is missing")
            kwargs[f.name] = from_json(hints[f.name], value[f.name], fail, key)
        try:
            return tp(**kwargs)
        except (TypeError, ValueError) as exc:
            raise fail(where, f"is invalid ({exc})") from None
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise fail(f"'{where}'", "must be a list")
        (item,) = typing.get_args(tp)
        return [from_json(item, v, fail, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail(f"'{where}'", "must be an object")
        _, item = typing.get_args(tp)
        return {k: from_json(item, v, fail, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise fail(f"'{where}'", f"must be {tp.__name__}, not {type(value).__name__}")


# --------------------------------------------------------------------------------------------- JSON Schema

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def schema_of(tp, defs: dict) -> dict:
    """JSON Schema (draft 2020-12) of type `tp`; dataclasses go into `defs` by name and are referenced."""
    union = _union_args(tp)
    if union is not None:
        options = [schema_of(t, defs) for t in union]
        return {"anyOf": options}
    if tp is type(None):
        return {"type": "null"}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            hints = _hints(tp)
            props, required = {}, []
            for f in dataclasses.fields(tp):
                props[f.name] = schema_of(hints[f.name], defs)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    required.append(f.name)
            doc = (tp.__doc__ or "").strip().splitlines()
            defs[name] = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
            if doc and not doc[0].startswith(f"{name}("):
                defs[name]["description"] = doc[0]
        return {"$ref": f"#/$defs/{name}"}
    origin = typing.get_origin(tp)
    if origin is list:
        return {"type": "array", "items": schema_of(typing.get_args(tp)[0], defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": schema_of(typing.get_args(tp)[1], defs)}
    raise TypeError(f"no JSON Schema for {tp!r}")
