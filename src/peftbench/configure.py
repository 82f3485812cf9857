"""From YAML and ``key=value`` overrides to a resolved, checked ``ExperimentConfig``.

``peftbench.config`` is the schema (typed sections, value checks); this module reads user input into it:
YAML and dotted overrides, coercion of each value to its field's type with one-line errors, and the method's
resolution (its options typed, its size chosen for ``method.budget``, its defaults for learning rate, schedule
and warm-up written into ``train`` once, so that ``config.yaml`` records every value the run uses).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import yaml

from peftbench.config import ExperimentConfig, ModelConfig, validate
from peftbench.errors import PeftbenchError
from peftbench.io import read_text_file
from peftbench.methods import build_method_config, get_method, load_method_module

# --------------------------------------------------------------------------------------------------
# YAML as users type it

_BOOL = "tag:yaml.org,2002:bool"


class ConfigLoader(yaml.SafeLoader):
    """YAML for configs, sweeps and ``key=value`` overrides: YAML 1.2's booleans (only true / false), so that
    ``no``, ``yes``, ``on`` and ``off`` stay the strings a user typed (``train.mixed_precision=no``); dates stay
    strings; numbers remember their text (:class:`YamlInt`, :class:`YamlFloat`), so that a string field keeps
    ``1.10`` or ``007`` as written. Fields typed bool still accept yes/no/on/off (see ``_coerce``)."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


class YamlInt(int):
    """An integer read from YAML, with the text it was written as (``text``)."""

    text: str


class YamlFloat(float):
    """A number with a fraction or exponent read from YAML, with the text it was written as (``text``)."""

    text: str


def _number(cls: type, construct: Any) -> Any:
    def build(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        value = cls(construct(loader, node))
        value.text = node.value
        return value

    return build


ConfigLoader.add_constructor("tag:yaml.org,2002:int", _number(YamlInt, yaml.SafeLoader.construct_yaml_int))
ConfigLoader.add_constructor("tag:yaml.org,2002:float", _number(YamlFloat, yaml.SafeLoader.construct_yaml_float))
yaml.SafeDumper.add_representer(YamlInt, yaml.representer.SafeRepresenter.represent_int)
yaml.SafeDumper.add_representer(YamlFloat, yaml.representer.SafeRepresenter.represent_float)


def load_yaml(text: str) -> Any:
    """``text`` parsed as peftbench reads configs (:class:`ConfigLoader`)."""
    return yaml.load(text, Loader=ConfigLoader)


def plain(value: Any) -> Any:
    """``value`` with YAML's remembered-text numbers made plain ``int`` / ``float`` (recursively)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, YamlInt):
        return int(value)
    if isinstance(value, YamlFloat):
        return float(value)
    return value


# --------------------------------------------------------------------------------------------------
# Coercion to the schema


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Converts a YAML/CLI value to a field's declared type, or raises a one-line error."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except PeftbenchError as exc:
                errors.append(str(exc))
        raise PeftbenchError(errors[0] if errors else f"{where}: bad value {value!r}")
    if tp is Any:
        return plain(value)
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise PeftbenchError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise PeftbenchError(f"{where}: expected a mapping, got {value!r}")
        return plain(dict(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise PeftbenchError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise PeftbenchError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return int(value)
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise PeftbenchError(f"{where}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise PeftbenchError(f"{where}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise PeftbenchError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise PeftbenchError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(getattr(value, "text", value))  # a number as typed: 1.10 stays "1.10"
        raise PeftbenchError(f"{where}: expected a string, got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Builds dataclass ``cls`` from a dict, recursing into nested dataclasses, with one-line errors."""
    if not isinstance(values, dict):
        raise PeftbenchError(f"{where or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        prefix = f"{where}." if where else ""
        raise PeftbenchError(
            f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid keys{' in ' + where if where else ''}: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        key = f"{where}.{name}" if where else name
        kwargs[name] = _build(tp, value, key) if _is_dataclass_type(tp) else _coerce(value, tp, key)
    return cls(**kwargs)


def _method_types(name: str) -> dict[str, Any]:
    return typing.get_type_hints(get_method(name).config_cls)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parses ``section.field=value``; the value is read as YAML (``null``, ``true``, ``[q, v]``, numbers)."""
    if "=" not in item:
        raise PeftbenchError(f"override {item!r} is not of the form key=value (e.g. train.learning_rate=1e-4)")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise PeftbenchError(f"override {item!r} has an empty key")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def set_dotted(raw: dict[str, Any], path: list[str], value: Any, item: str) -> None:
    """Sets ``raw[path[0]]...[path[-1]] = value``, creating sections; ``item`` names the override in errors."""
    node = raw
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise PeftbenchError(f"override {item!r}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies dotted overrides to a raw config dict (before type checking)."""
    for item in overrides:
        path, value = parse_override(item)
        set_dotted(raw, path, value, item)
    return raw


def config_from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Builds and checks an ExperimentConfig from a plain dict."""
    raw = dict(raw or {})
    method = raw.pop("method", None)
    if method is None:
        method = {"name": "lora"}
    if isinstance(method, str):
        method = {"name": method}
    if not isinstance(method, dict) or "name" not in method:
        raise PeftbenchError("method: expected a mapping with a 'name' (e.g. method: {name: lora, r: 8})")
    cfg = _build(ExperimentConfig, raw, "")
    module = method.get("module")
    if module is not None:  # a method not yet packaged: its module registers it, before its name is looked up
        load_method_module(module)
    types_ = _method_types(str(method["name"]))
    options = {}
    for key, value in method.items():
        if key in ("name", "budget", "module"):
            continue
        options[key] = _coerce(value, types_[key], f"method.{key}") if key in types_ else plain(value)
    budget = plain(method.get("budget"))
    if budget is not None:  # choose the size knob now, so that config.yaml records the value the run uses
        options, budget = _apply_budget(str(method["name"]), cfg.model, options, budget)
    # Fill in the method's defaults so that config.yaml records every value the run used.
    resolved = asdict(_build_method(str(method["name"]), options))
    cfg.method = {
        "name": str(method["name"]),
        **({"module": module} if module is not None else {}),
        **({"budget": budget} if budget is not None else {}),
        **resolved,
    }
    _fill_method_defaults(cfg)
    validate(cfg)
    return cfg


def _apply_budget(name: str, model: ModelConfig, options: dict[str, Any], budget: Any) -> tuple[dict[str, Any], Any]:
    """Sets the method's size knob from ``method.budget``; refuses a knob value that disagrees with it."""
    from peftbench.methods.core.budget import match_budget  # builds the model's skeleton: transformers

    match = match_budget(name, model, {k: v for k, v in options.items() if k != _knob(name)}, budget)
    given = options.get(match.knob)
    if given is not None and given != match.value:
        raise PeftbenchError(
            f"method.{match.knob}={given} conflicts with method.budget={budget} (which picks "
            f"{match.knob}={match.value} on {model.name}); set one of them"
        )
    return {**options, match.knob: match.value}, budget


def _knob(name: str) -> str | None:
    knob = get_method(name).size_knob
    return knob.field if knob is not None else None


def _fill_method_defaults(cfg: ExperimentConfig) -> None:
    """Writes the method's default learning rate, schedule and warm-up into unset ``train`` fields, so the
    saved config (and its hash) records the values the run really uses."""
    spec = get_method(cfg.method_name)
    t = cfg.train
    if t.learning_rate is None:
        t.learning_rate = spec.default_learning_rate
    if t.lr_scheduler is None:
        t.lr_scheduler = spec.lr_scheduler
    if t.warmup_ratio is None:
        t.warmup_ratio = spec.warmup_ratio


def _build_method(name: str, options: dict[str, Any]) -> Any:
    return build_method_config(name, options)


def method_config(cfg: ExperimentConfig) -> Any:
    """The typed config dataclass of ``cfg``'s method (its options, without ``name``, ``module`` and ``budget``;
    ``method.module`` is imported first)."""
    options = {k: v for k, v in cfg.method.items() if k not in ("name", "budget")}
    return build_method_config(cfg.method_name, options)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's mapping, read as the CLI reads it (:func:`load_yaml`: ``no``/``yes``/``on``/``off`` stay
    strings), with one-line errors. The CLI, the Python API (``peftbench.load_config``), the presets and sweep files
    all read through it."""
    p = Path(path)
    if p.is_dir():
        run = f" (a run directory: its config is {p / 'config.yaml'})" if (p / "config.yaml").is_file() else ""
        raise PeftbenchError(f"{p} is a directory, not a config file{run}")
    if not p.is_file():
        raise PeftbenchError(f"config file {p} does not exist")
    try:
        loaded = load_yaml(read_text_file(p))
    except OSError as exc:
        raise PeftbenchError(f"cannot read {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise PeftbenchError(f"{p}{at}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise PeftbenchError(f"{p}: expected a mapping of sections at the top level")
    return loaded


Overrides = Mapping[str, Any] | Sequence[str] | str | None
"""Dotted overrides: ``{"train.learning_rate": 1e-4, "method.r": 16}`` (values as they are) or, as on the command
line, ``["train.learning_rate=1e-4", "method.r=16"]`` (values read as YAML)."""


def load_config(
    config: str | Path | Mapping[str, Any] | ExperimentConfig | None, overrides: Overrides = None
) -> ExperimentConfig:
    """A validated, fully resolved config from a YAML file, a plain dict (the YAML's structure), an existing config
    or (``None``) the defaults, with dotted overrides applied: the one loader of ``peftbench train`` and
    ``peftbench.load_config``."""
    if isinstance(config, ExperimentConfig):
        if not overrides:
            return config
        raw = config.to_dict()
    elif isinstance(config, Mapping):
        raw = copy.deepcopy(dict(config))
    else:
        raw = read_config_file(config) if config is not None else {}
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            path = [p for p in str(key).split(".") if p]
            if not path:
                raise PeftbenchError(f"override {key!r} has an empty key")
            set_dotted(raw, path, value, str(key))
        return config_from_dict(raw)
    strings = [overrides] if isinstance(overrides, str) else list(overrides or [])
    return config_from_dict(apply_overrides(raw, strings))
