"""Typed settings: the base model and field types of every configuration group, and the
one-line form of their validation errors.

Each group of ``params.yaml`` is a pydantic model built from :class:`Settings`; a range
rule sits on its field (``Number(gt=0)``) together with the words a user reads when it is
broken ("a number > 0"). Values are taken as YAML gives them: no text is read as a number
(but ``1e-3``, which YAML 1.1 reads as text), no number as a flag. :func:`validate` turns
pydantic's error list into one :class:`~dpap.errors.ConfigError` line::

    pruning.dpap.fc.eta: got -1, expected a number > 0
"""

from __future__ import annotations

import re
import types
import typing
from typing import Annotated, Any, Literal, Optional, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError
from pydantic.fields import FieldInfo

from dpap.errors import ConfigError

_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # 1e-3, 5E4, -2.5e+1


def _exponent_text(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as text; in a number field it means a number."""
    if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        return float(value)
    return value


class Expected:
    """What a field accepts, in words ("a number in (0, 1]"): the end of its error line."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:  # pragma: no cover - shown in pydantic's schema reprs only
        return f"Expected({self.text!r})"


def Number(expected: str = "a number", **rules: Any) -> Any:
    """A finite float field (ints accepted) with pydantic range ``rules`` (gt, ge, lt, le)."""
    return Annotated[float, BeforeValidator(_exponent_text), Strict(), Field(allow_inf_nan=False, **rules), Expected(expected)]


def Integer(expected: str = "an integer", **rules: Any) -> Any:
    """An int field (no bools, no floats) with pydantic range ``rules``."""
    return Annotated[int, Strict(), Field(**rules), Expected(expected)]


Flag = Annotated[bool, Strict(), Expected("true or false")]
Text = Annotated[str, Strict(), Expected("a string")]


class Settings(BaseModel):
    """Base of every settings group: unknown keys are errors; assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


S = TypeVar("S", bound=BaseModel)


def _field_of(model: type[BaseModel], loc: tuple) -> Optional[FieldInfo]:
    """The field that ``loc`` (pydantic's error location) points at."""
    field: Optional[FieldInfo] = None
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str) and part in tp.model_fields:
            field = tp.model_fields[part]
            tp = field.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
            field = None
        else:
            break
    return field


def _unwrap(tp: Any) -> Any:
    """``Optional[X]`` → ``X``; ``Annotated[X, ...]`` → ``X``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _marker(tp: Any) -> Optional[Expected]:
    """The :class:`Expected` inside ``tp`` (also inside ``Optional[Annotated[...]]``)."""
    if typing.get_origin(tp) is Annotated:
        for meta in typing.get_args(tp)[1:]:
            if isinstance(meta, Expected):
                return meta
        return _marker(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            found = _marker(arg)
            if found is not None:
                return found
    return None


def _expected(field: Optional[FieldInfo]) -> str:
    if field is None:
        return "a valid value"
    for meta in field.metadata:
        if isinstance(meta, Expected):
            return meta.text
    marker = _marker(field.annotation)
    if marker is not None:
        return marker.text
    tp = _unwrap(field.annotation)
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "a mapping of keys"
    if typing.get_origin(tp) is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, "a valid value")


def error_line(model: type[BaseModel], err: dict, prefix: str = "") -> str:
    """One pydantic error of ``model`` as ``key: got <value>, expected <what>``."""
    loc = tuple(err["loc"])
    key = ".".join([prefix] * bool(prefix) + [str(p) for p in loc]) or "params"
    kind = err["type"]
    if kind == "extra_forbidden":
        owner_model = _owner_model(model, loc[:-1])
        allowed = ", ".join(owner_model.model_fields) if owner_model is not None else ""
        return f"{key}: unknown key; allowed keys here: {allowed}"
    if kind == "missing":
        return f"{key}: missing; it has no default, give it a value"
    if kind == "value_error" and isinstance(err.get("ctx", {}).get("error"), ConfigError):
        message = str(err["ctx"]["error"])
        if not (prefix or loc):
            return message
        # a model's own rule names its field first ("end_epoch: ..."): joined to the key
        owner = _owner_model(model, loc)
        name, sep, _ = message.partition(": ")
        return f"{key}.{message}" if sep and owner is not None and name in owner.model_fields else f"{key}: {message}"
    field = _field_of(model, loc)
    if kind == "model_type" or kind == "dict_type":
        return f"{key}: got {err['input']!r}, expected a mapping of keys"
    return f"{key}: got {err['input']!r}, expected {_expected(field)}"


def _owner_model(model: type[BaseModel], loc: tuple) -> Optional[type[BaseModel]]:
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def validate(model: type[S], raw: Any, prefix: str = "") -> S:
    """``model`` built from ``raw`` (a parsed YAML mapping), or a one-line
    :class:`~dpap.errors.ConfigError` naming the first bad key (under ``prefix``)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'params'}: got {raw!r}, expected a mapping of keys")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(error_line(model, exc.errors()[0], prefix)) from None
