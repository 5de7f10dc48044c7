"""The methods a run can use, by command-line name: ``naive``, ``joint`` and every regularizer
class of :data:`forgetless.regularizers.CLASSES` with its variants. Every fact about a method is
read from its class (see :class:`~forgetless.regularizers.Regularizer`); nothing here is per method.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

from .options import Option, keyword_options
from .regularizers import CLASSES, Regularizer
from .regularizers.base import Variant, as_variant

# Constructor parameters the runner fills itself: the run's random seed.
RUN_SUPPLIED = ("seed",)


@dataclass(frozen=True)
class Method:
    """A command-line method: a regularizer class, or a variant of one (some options fixed, others
    with their own defaults, its own default strength and grid), or none (naive, joint).

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
        >>> k = METHODS["ewc-kfac"]
        >>> k.fixed, k.options["kfac_damping"].default, k.default_strength, k.takes("structure")
        ({'structure': 'kfac'}, 0.3, 31.6, False)
    """

    name: str
    regularizer: type[Regularizer] | None = None
    variant: Variant = field(default_factory=Variant)  # a variant's facts (none for the class itself)
    joint: bool = False                                # trains on all data of the tasks so far

    @property
    def fixed(self) -> Mapping[str, Any]:
        """The constructor options this method fixes (a variant's)."""
        return self.variant.fixed

    @property
    def has_strength(self) -> bool:
        return self.regularizer is not None

    @property
    def default_strength(self) -> float | None:
        if self.regularizer is None:
            return None
        if self.variant.strength is not None:
            return float(self.variant.strength)
        return float(keyword_options(self.regularizer)["strength"].default)

    @property
    def strength_grid(self) -> tuple[float, ...]:
        if self.regularizer is None:
            return ()
        return self.variant.strength_grid or self.regularizer.strength_grid

    @cached_property
    def options(self) -> dict[str, Option]:
        """The hyperparameters a user may set (the strength has its own handling)."""
        if self.regularizer is None:
            return {}
        skip = ("strength", *RUN_SUPPLIED, *self.fixed)
        options = keyword_options(self.regularizer, skip=skip, choices=self.regularizer.choices)
        return {name: dataclasses.replace(o, default=self.variant.defaults[name]) if name in self.variant.defaults else o
                for name, o in options.items()}

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
        return self.regularizer(chosen, **self.fixed, **{**self.variant.defaults, **options}, **run)


def methods_of(classes: tuple[type[Regularizer], ...]) -> dict[str, Method]:
    """naive, joint, then each class and its variants by command-line name."""
    methods = {"naive": Method("naive"), "joint": Method("joint", joint=True)}
    for cls in classes:
        methods[cls.name] = Method(cls.name, cls)
        for name, spec in cls.variants.items():
            variant = as_variant(spec)
            known = keyword_options(cls, skip=("strength", *RUN_SUPPLIED))
            unknown = [k for k in (*variant.fixed, *variant.defaults) if k not in known]
            if unknown:
                raise ValueError(f"variant {name} of {cls.__name__} sets {', '.join(unknown)}, "
                                 f"not options of its constructor ({', '.join(known)})")
            methods[name] = Method(name, cls, variant)
    return methods


METHODS: dict[str, Method] = methods_of(CLASSES)


def method(name: str) -> Method:
    """The method called ``name`` (ValueError listing the valid names otherwise)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]
