"""Options read from a signature: a function's (or class's) keyword parameters, their types,
defaults and the help its docstring gives them.

This is how a method's hyperparameters (its regularizer's constructor), a benchmark's options (its
builder) and a model's options (its factory) become config keys, command-line flags and sweep axes
without a second list anywhere: the signature is the one home of each option.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping


@dataclass(frozen=True)
class Option:
    """One keyword parameter: its name, type annotation, default, help text and allowed values."""

    name: str
    annotation: Any
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None


def keyword_options(
    fn: Callable[..., Any], *, skip: Iterable[str] = (), choices: Mapping[str, tuple[Any, ...]] | None = None
) -> dict[str, Option]:
    """The keyword parameters of ``fn`` (a class: its constructor) with a default, but those in ``skip``.

    Help comes from the ``Args:`` section of ``fn``'s docstring (Google style).

    Example:
        >>> def build(data, *, scenario: str, n_tasks: int = 10, shuffle: bool = False):
        ...     '''Args:
        ...         n_tasks: how many tasks.
        ...     '''
        >>> [(o.name, o.annotation, o.default, o.help) for o in keyword_options(build).values()]
        [('n_tasks', <class 'int'>, 10, 'how many tasks.'), ('shuffle', <class 'bool'>, False, '')]
    """
    skipped = set(skip)
    return {name: dataclasses.replace(option, choices=(choices or {}).get(name))
            for name, option in _read(fn).items() if name not in skipped}


@functools.lru_cache(maxsize=None)
def _read(fn: Callable[..., Any]) -> dict[str, Option]:
    # A signature does not change: read each once (settings are checked often, e.g. per sweep point).
    target = fn.__init__ if inspect.isclass(fn) else fn
    helps = docstring_args(inspect.getdoc(fn) or "")
    return {
        p.name: Option(p.name, _annotation(target, p), p.default, helps.get(p.name, ""))
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty
    }


def _annotation(fn: Callable[..., Any], parameter: inspect.Parameter) -> Any:
    # One parameter at a time: another parameter's annotation may name a type imported only for
    # type checkers (typing.get_type_hints would evaluate them all).
    annotation = parameter.annotation
    if annotation is parameter.empty:
        return Any
    if isinstance(annotation, str):
        return eval(annotation, vars(inspect.getmodule(fn)))  # noqa: S307 - the package's own annotations
    return annotation


def docstring_args(doc: str) -> dict[str, str]:
    """``name -> text`` of a Google-style ``Args:`` section (continuation lines joined).

    Example:
        >>> docstring_args('''Do it.
        ...
        ... Args:
        ...     decay: γ in [0, 1], how much
        ...         survives.
        ...     seed: seeds it.
        ...
        ... Returns:
        ...     nothing.''')
        {'decay': 'γ in [0, 1], how much survives.', 'seed': 'seeds it.'}
    """
    out: dict[str, str] = {}
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return out
    indent = None
    name = None
    for line in lines[start + 1:]:
        if not line.strip():
            if name is not None and indent is not None:
                continue
            break
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        match = re.match(r"\s*(\w+)(?: \(.*?\))?:\s*(.*)", line) if depth == indent else None
        if match:
            name = match.group(1)
            out[name] = match.group(2).strip()
        elif name is not None:
            out[name] = f"{out[name]} {line.strip()}".strip()
    return out
