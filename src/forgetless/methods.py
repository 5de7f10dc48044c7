"""The methods a run can use, by command-line name: ``naive``, ``joint`` and every regularizer
class of :data:`forgetless.regularizers.CLASSES` with its variants. Every fact about a method is
read from its class (see :class:`~forgetless.regularizers.Regularizer`); nothing here is per method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

from .options import Option, keyword_options
from .regularizers import CLASSES, Regularizer

# Constructor parameters the runner fills itself: the run's random seed.
RUN_SUPPLIED = ("seed",)


@dataclass(frozen=True)
class Method:
    """A command-line method: a regularizer class with some options fixed, or none (naive, joint).

    Example:
        >>> m = METHODS["online-ewc"]
        >>> m.default_strength, m.takes("decay"), METHODS["si"].takes("decay")
        (1000.0, True, False)
        >>> m.build(10.0, {"decay": 0.5}, seed=3).hyperparameters()["decay"]
        0.5
        >>> METHODS["mas"].build(1.0, {"fisher_samples": 100}, seed=0)
        Traceback (most recent call last):
        ...
        ValueError: method mas does not take fisher_samples; its settings: strength, importance_samples
    """

    name: str
    regularizer: type[Regularizer] | None = None
    fixed: Mapping[str, Any] = field(default_factory=dict)   # a variant's fixed constructor options
    joint: bool = False                                      # trains on all data of the tasks so far

    @property
    def has_strength(self) -> bool:
        return self.regularizer is not None

    @property
    def default_strength(self) -> float | None:
        if self.regularizer is None:
            return None
        return float(keyword_options(self.regularizer)["strength"].default)

    @property
    def strength_grid(self) -> tuple[float, ...]:
        return self.regularizer.strength_grid if self.regularizer is not None else ()

    @cached_property
    def options(self) -> dict[str, Option]:
        """The hyperparameters a user may set (the strength has its own handling)."""
        if self.regularizer is None:
            return {}
        skip = ("strength", *RUN_SUPPLIED, *self.fixed)
        return keyword_options(self.regularizer, skip=skip, choices=self.regularizer.choices)

    def takes(self, setting: str) -> bool:
        """Whether ``setting`` (a hyperparameter, or ``strength`` / ``strength_grid``) means anything to this method."""
        if setting in ("strength", "strength_grid"):
            return self.has_strength
        return setting in self.options

    def settings(self) -> list[str]:
        return (["strength"] if self.has_strength else []) + list(self.options)

    def build(self, strength: float | None, options: Mapping[str, Any], seed: int) -> Regularizer | None:
        """The regularizer (None for naive and joint); an option the method does not take is an error."""
        extra = [k for k in options if k not in self.options]
        if extra or (strength is not None and not self.has_strength):
            wrong = extra or ["strength"]
            raise ValueError(f"method {self.name} does not take {', '.join(wrong)}; "
                             f"its settings: {', '.join(self.settings()) or 'none'}")
        if self.regularizer is None:
            return None
        run = {"seed": seed} if "seed" in keyword_options(self.regularizer) else {}
        chosen = self.default_strength if strength is None else strength
        return self.regularizer(chosen, **self.fixed, **options, **run)


def methods_of(classes: tuple[type[Regularizer], ...]) -> dict[str, Method]:
    """naive, joint, then each class and its variants by command-line name."""
    methods = {"naive": Method("naive"), "joint": Method("joint", joint=True)}
    for cls in classes:
        methods[cls.name] = Method(cls.name, cls)
        methods.update({name: Method(name, cls, dict(fixed)) for name, fixed in cls.variants.items()})
    return methods


METHODS: dict[str, Method] = methods_of(CLASSES)


def method(name: str) -> Method:
    """The method called ``name`` (ValueError listing the valid names otherwise)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]
