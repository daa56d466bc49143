"""What an allocator says about itself: typed parameters, grain, contiguity, capacity.

Each allocator module ends with its SPEC; allocators.SPECS collects them. The CLI, config files,
sweep grids, the planner and reports read a spec instead of knowing allocator names, so a new
allocator is one module plus one line in the registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class ParamError(ValueError):
    """An allocator name or parameter that cannot describe a run: names the allocator, the key,
    the value and what is allowed."""


@dataclass(frozen=True)
class Param:
    """One constructor keyword of an allocator."""

    name: str
    type: type  # int, bool or str
    default: Any
    help: str
    min: int | str | None = None  # a bound, or the name of a parameter this one may not go below
    max: int | None = None
    choices: tuple[Any, ...] = ()
    optional: bool = False  # None is a value (it means "not set", as max_model_len does)
    label: str = ""  # the short name report labels use ("bs=32"); the name where empty

    def allowed(self) -> str:
        """What values this parameter takes, in words."""
        if self.choices:
            what = "one of " + ", ".join(map(str, self.choices))
        elif self.type is bool:
            what = "true or false"
        elif self.type is int:
            what = "an integer" + _bounds(self.min, self.max)
        else:
            what = "a string"
        return what + (" or none" if self.optional else "")

    def convert(self, value: Any) -> Any:
        """The value as this parameter's type; strings (from the command line) are parsed.
        Raises ValueError saying why, without the allocator's name (the spec adds it)."""
        if value is None or (self.optional and isinstance(value, str)
                             and value.strip().lower() == "none"):
            if self.optional:
                return None
            raise ValueError("is required")
        if self.type is bool:
            return _to_bool(value)
        if self.type is int:
            return _to_int(value)
        if not isinstance(value, str):
            raise ValueError(f"is not a {self.type.__name__}")
        return value

    def check_range(self, value: Any, resolved: Mapping[str, Any]) -> None:
        """Raise ValueError when value lies outside the bounds or choices; a bound that names
        another parameter is read from resolved (every parameter, defaults filled in)."""
        if value is None:
            return
        if self.choices and value not in self.choices:
            raise ValueError("is not a choice")
        low = resolved[self.min] if isinstance(self.min, str) else self.min
        if low is not None and value < low:
            raise ValueError(f"is below {self.min}" + (f" ({low})" if low != self.min else ""))
        if self.max is not None and value > self.max:
            raise ValueError(f"is above {self.max}")


def _bounds(low: int | str | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" in {low}..{high}"
    if low is not None:
        return f" >= {low}"
    return "" if high is None else f" <= {high}"


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("is not true or false")


def _to_int(value: Any) -> int:
    # bool is an int to Python, but block_size = true is a mistake, not 1.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError("is not an integer")


@dataclass(frozen=True)
class Capacity:
    """What a budget holds for sequences of one context length."""

    tokens_per_seq: int  # slots one sequence of the context occupies
    max_concurrency: int  # sequences of that context the budget holds at once
    largest_context: int  # the longest single sequence that fits


# (budget_slots, context, parameters with defaults filled in) -> Capacity
CapacityFormula = Callable[[int, int, Mapping[str, Any]], Capacity]


@dataclass(frozen=True)
class AllocatorSpec:
    """One allocator: its class, parameters and the facts others need without knowing its name."""

    name: str
    cls: type
    params: tuple[Param, ...]
    grain: str  # the parameter that sets its allocation unit (what --block-size sets)
    needs_contiguity: bool  # a request's KV must be one contiguous range
    capacity_formula: CapacityFormula
    # Whether evicted prefix-cache entries can wait in a host tier: the class then takes
    # host_cache_slots, the tier's size (a run's CPU memory, not an allocator parameter).
    host_tier: bool = False
    cost_hint: float = 1.0  # relative CPU cost per simulated request, to schedule long runs first
    max_len_param: str | None = None  # the parameter that fixes every request's reservation
    # A bool parameter that, when true, makes the reservation the request's actual final length
    # (an oracle): max_len_param then only caps requests, and labels say "oracle".
    oracle_param: str | None = None

    def __post_init__(self) -> None:
        for key in (self.grain, self.max_len_param, self.oracle_param):
            if key is not None and key not in self.names:
                raise ValueError(f"allocator {self.name}: {key} is not one of its parameters")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def param(self, key: str) -> Param:
        for p in self.params:
            if p.name == key:
                return p
        raise ParamError(f"allocator {self.name}: unknown parameter {key!r}; "
                         f"allowed: {self.describe()}")

    def describe(self) -> str:
        """Every parameter with what it takes, for error messages and --help."""
        return "; ".join(f"{p.name} ({p.allowed()}, default {p.default})" for p in self.params)

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The given parameters converted to their types and checked against their ranges.
        Defaults are not added, so a config records only what its author set."""
        out = {key: self._convert(key, value) for key, value in params.items()}
        resolved = {**self.defaults, **out}
        for key, value in out.items():
            try:
                self.param(key).check_range(value, resolved)
            except ValueError as exc:
                raise self._error(key, value, exc) from None
        return out

    def resolve(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter: the given ones validated, the rest at their defaults."""
        return {**self.defaults, **self.validate(params)}

    def build(self, budget_slots: int, params: Mapping[str, Any], *, host_cache_slots: int = 0):
        """The allocator over budget_slots slots with these parameters, and a host tier of
        host_cache_slots slots for its prefix cache (0: none)."""
        valid = self.validate(params)
        if not host_cache_slots:
            return self.cls(budget_slots, **valid)
        if not self.host_tier:
            raise ParamError(f"allocator {self.name} keeps no prefix cache for a host tier "
                             f"(host_cache_slots={host_cache_slots}) to back")
        return self.cls(budget_slots, host_cache_slots=host_cache_slots, **valid)

    def capacity(self, budget_slots: int, context: int, params: Mapping[str, Any]) -> Capacity:
        return self.capacity_formula(budget_slots, context, self.resolve(params))

    def max_model_len(self, params: Mapping[str, Any]) -> int | None:
        """The length every request reserves up front and is capped at (None: no such cap)."""
        if self.max_len_param is None:
            return None
        resolved = self.resolve(params)
        if self.oracle_param is not None and resolved[self.oracle_param]:
            return None
        return resolved[self.max_len_param]

    def is_oracle(self, params: Mapping[str, Any]) -> bool:
        """Whether these parameters reserve what no real engine knows (the actual output)."""
        return self.oracle_param is not None and bool(self.resolve(params)[self.oracle_param])

    def _convert(self, key: str, value: Any) -> Any:
        if key not in self.names:
            raise ParamError(f"allocator {self.name}: unknown parameter {key}={value!r}; "
                             f"allowed: {self.describe()}")
        param = self.param(key)
        try:
            return param.convert(value)
        except ValueError as exc:
            raise self._error(key, value, exc) from None

    def _error(self, key: str, value: Any, why: Exception) -> ParamError:
        return ParamError(f"allocator {self.name}: {key}={value!r} {why}; "
                          f"allowed: {self.param(key).allowed()}")
