"""Strict typed configs: a file or a flag may only set a field that exists, with a value of its type."""
from __future__ import annotations

import dataclasses
import functools
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """An unknown key, a wrong type or an unreadable config file."""


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file into a dict.

    YAML is read as TOML is: a key given twice in one table is an error (PyYAML would keep the last
    value), and ``1e-3`` is a number (PyYAML's YAML 1.1 rules need ``1.0e-3`` and read ``1e-3`` as text).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover
                import tomli as tomllib
            content = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            content = _yaml_loads(text)
        else:
            raise ConfigError(f"config file {path}: use a .toml, .yaml or .yml file")
    except ConfigError:
        raise
    except Exception as err:  # the parsers' own errors say where the problem is
        raise ConfigError(f"config file {path} could not be parsed: {err}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path} must hold a table of settings, not {type(content).__name__}")
    return content


def _yaml_loads(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=_strict_yaml_loader()) or {}


# YAML 1.2's floats: what 1.1 accepts plus exponents without a dot (1e-3, 5E+2); inf and nan as in 1.1.
_YAML_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                              |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                              |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                              |[-+]?\.(?:inf|Inf|INF)
                              |\.(?:nan|NaN|NAN))$""", re.X)


@functools.lru_cache(maxsize=None)
def _strict_yaml_loader():
    """A SafeLoader subclass (PyYAML's own loaders are left as they are) that refuses duplicate keys
    and reads 1e-3 as a float. Built on first use: importing this module does not import yaml."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in seen:  # read_config_file adds the file's name
                    raise ValueError(f"key {key!r} appears twice (lines {seen[key]} and {line}); keep one")
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    # replace (not add to) the float resolver, so that the 1.1 rule does not see these first
    StrictLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML_FLOAT, list("-+0123456789."))
    return StrictLoader


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a (simple) type annotation, converting lists to tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _coerce(name, value, option)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{name}: {value!r} is not a valid value (expected {_describe(annotation)})")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{name}: expected nothing, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        return tuple(_coerce(name, v, item_type) for v in value)
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(repr, args))}")
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
            return value
        raise ConfigError(f"{name}: expected {annotation.__name__}, got {value!r}")
    return value


def _describe(annotation: Any) -> str:
    return str(annotation).replace("typing.", "")


def build_config(cls: type[T], *layers: Mapping[str, Any]) -> T:
    """Defaults ← each layer in order (e.g. the file, then the flags); unknown keys are errors.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class C:
        ...     lr: float = 0.1
        >>> build_config(C, {"lr": 1})
        C(lr=1.0)
        >>> build_config(C, {"learning_rate": 1})  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ...
        forgetless.config.ConfigError: unknown setting 'learning_rate'; valid settings: lr
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ConfigError(f"unknown setting {key!r}; valid settings: {', '.join(sorted(fields))}")
            values[name] = _coerce(name, value, hints[name])
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(str(err)) from None
