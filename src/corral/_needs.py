"""What a task declares before it may start, and the check of a whole batch against the run.

A task may name exclusive ``locks``, counted resources it ``uses``, an estimate of its peak
``memory``, the tasks it must come ``after``, and hints that order ready tasks (``cost``,
``priority``). ``Task`` normalises its own fields on construction (``norm_*``); ``corral.map``
computes the same fields per item from callables or constants (``needs_for_items``).

``plan`` then checks the batch as a whole against the run's ``resources`` and
``memory_budget`` — unknown resource, a need no capacity could ever meet, unknown dependency,
a dependency cycle — before any worker starts, and turns keys into positions for the
scheduler (``_scheduler``). A batch that declares nothing gets no plan: it keeps the chunked
fast path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from ._codec import human_size
from ._errors import ConfigError
from ._options import RunOptions, is_positive, parse_size

NEED_FIELDS = ("locks", "uses", "memory", "after", "cost", "priority", "group")
"""Per-task fields that ``corral.map`` also takes, as a callable of the item or a constant."""

MEMORY_SAFETY = 0.8
"""``memory_budget="auto"``: the share of the RAM available when the run starts that running
tasks' estimates may add up to; the rest is headroom for the workers themselves and for
estimates that turn out low."""


class Needs(NamedTuple):
    locks: tuple[str, ...] = ()
    uses: tuple[tuple[str, float], ...] = ()
    memory: int = 0
    after: tuple[Any, ...] = ()
    cost: float | None = None
    priority: int = 0

    @property
    def declared(self) -> bool:
        """Whether the scheduler has anything to do for this task."""
        return bool(self.locks or self.uses or self.memory or self.after or self.priority) or (
            self.cost is not None
        )


NO_NEEDS = Needs()


# -- one task's fields ----------------------------------------------------------------------


def norm_locks(value: Any) -> tuple[str, ...]:
    """A name or a list of names: strings, or paths (``os.PathLike``) named by ``os.fspath``.

    Names are compared as given, never resolved: ``"data/a.nc"``, ``"./data/a.nc"`` and the
    absolute path are three locks. (``Path("./data/a.nc")`` is ``"data/a.nc"``: ``pathlib``
    drops the ``./`` itself.) Give one file the same spelling in every task, e.g.
    ``Path(f).resolve()``.
    """
    if value is None:
        return ()
    if isinstance(value, (str, os.PathLike)):
        names: tuple[Any, ...] = (value,)
    else:
        names = _iterable("locks", value)
    checked = []
    for name in names:
        if isinstance(name, os.PathLike):
            name = os.fspath(name)
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"lock names must be non-empty strings or paths (os.PathLike), not {name!r}"
            )
        checked.append(name)
    return tuple(dict.fromkeys(checked))  # a lock named twice is still one lock


def norm_uses(value: Any) -> tuple[tuple[str, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ConfigError(f"uses must be a mapping of resource name to amount, not {value!r}")
    uses = []
    for name, amount in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"resource names must be non-empty strings, not {name!r}")
        if not is_positive(amount):
            raise ConfigError(f"uses[{name!r}] must be a positive number, not {amount!r}")
        uses.append((name, float(amount)))
    return tuple(sorted(uses))


def norm_memory(value: Any) -> int:
    if value is None:
        return 0
    return parse_size(value, "memory")


def norm_after(value: Any) -> tuple[Any, ...]:
    """A key, or a list/tuple/set of keys (wrap a tuple key in a list: ``[("tas", 1980)]``)."""
    if value is None:
        return ()
    keys = tuple(value) if isinstance(value, (list, tuple, set, frozenset)) else (value,)
    for key in keys:
        try:
            hash(key)
        except TypeError:
            raise ConfigError(f"after= keys must be hashable, not {key!r}") from None
    return tuple(dict.fromkeys(keys))


def norm_cost(value: Any) -> float | None:
    if value is None:
        return None
    if not is_positive(value, allow_zero=True):
        raise ConfigError(f"cost must be a non-negative number of seconds, not {value!r}")
    return float(value)


def norm_priority(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"priority must be an integer, not {value!r}")
    return value


def norm_group(value: Any) -> Any:
    """Any hashable label (a string, a number, a tuple); progress and reports show ``str()``."""
    try:
        hash(value)
    except TypeError:
        raise ConfigError(
            f"group must be a hashable label (a string, a number or a tuple), not {value!r}"
        ) from None
    return value


def make_needs(
    locks: Any = None,
    uses: Any = None,
    memory: Any = None,
    after: Any = None,
    cost: Any = None,
    priority: Any = None,
) -> Needs:
    needs = Needs(
        norm_locks(locks),
        norm_uses(uses),
        norm_memory(memory),
        norm_after(after),
        norm_cost(cost),
        norm_priority(priority),
    )
    return needs if needs.declared else NO_NEEDS


def _iterable(what: str, value: Any) -> tuple[Any, ...]:
    try:
        return tuple(value)
    except TypeError:
        raise ConfigError(
            f"{what} must be a name or a list of names (strings or paths), not {value!r}"
        ) from None


# -- corral.map's per-item specs ----------------------------------------------------------------


def pop_item_specs(options: dict[str, Any]) -> dict[str, Any]:
    """Take ``locks=``, ``uses=``, ... out of ``corral.map``'s keyword options."""
    return {name: options.pop(name) for name in NEED_FIELDS if name in options}


def needs_for_items(
    specs: Mapping[str, Any], items: Sequence[Any]
) -> tuple[list[Needs] | None, list[Any] | None]:
    """Each item's Needs and group from ``corral.map``'s specs (callables of the item, or
    constants). ``(None, None)`` when nothing is declared."""
    if not specs:
        return None, None
    specs = {k: v for k, v in specs.items() if v is not None}
    group_spec = specs.pop("group", None)
    needs: list[Needs] | None = None
    if specs:
        needs = [make_needs(**_evaluate(specs, item, i)) for i, item in enumerate(items)]
    groups = None
    if group_spec is not None:
        groups = [
            norm_group(_evaluate({"group": group_spec}, item, i)["group"])
            for i, item in enumerate(items)
        ]
    return needs, groups


def _evaluate(specs: Mapping[str, Any], item: Any, index: int) -> dict[str, Any]:
    values = {}
    for name, spec in specs.items():
        if callable(spec):
            try:
                values[name] = spec(item)
            except Exception as exc:
                raise ConfigError(
                    f"{name}= raised {type(exc).__name__}: {exc} for item {index} ({item!r:.80})"
                ) from exc
        else:
            values[name] = spec
    return values


# -- the batch as a whole -----------------------------------------------------------------------


class Plan(NamedTuple):
    """A checked batch, in positions: what the scheduler needs and nothing else."""

    needs: Sequence[Needs]
    deps: list[tuple[int, ...]]
    rank: list[float]
    capacities: dict[str, float]
    memory_budget: int


def plan(keys: Sequence[Any], needs: Sequence[Needs] | None, options: RunOptions) -> Plan | None:
    """Check ``needs`` against the run and each other; None when there is nothing to schedule.

    ``keys[i]`` is the key of position ``i`` as reports show it (the position when the task
    has none); dependencies name these keys.
    """
    if needs is None or not any(n.declared for n in needs):
        return None
    capacities = dict(options.resources or {})
    budget = _check_memory(keys, needs, options)
    _check_uses(keys, needs, capacities)
    deps = _resolve_deps(keys, needs)
    order = _topological_order(keys, deps)
    return Plan(needs, deps, _upward_rank(needs, deps, order), capacities, budget)


def _check_uses(keys: Sequence[Any], needs: Sequence[Needs], capacities: dict[str, float]) -> None:
    for pos, need in enumerate(needs):
        for name, amount in need.uses:
            if name not in capacities:
                known = ", ".join(map(repr, sorted(capacities))) or "none"
                raise ConfigError(
                    f"task {keys[pos]!r} uses {name!r}, which has no capacity in this run "
                    f"(resources given: {known}); pass resources={{{name!r}: N}}"
                )
            if amount > capacities[name] + 1e-9:
                raise ConfigError(
                    f"task {keys[pos]!r} uses {amount:g} of {name!r} but its capacity is "
                    f"{capacities[name]:g}: it could never start"
                )


def _check_memory(keys: Sequence[Any], needs: Sequence[Needs], options: RunOptions) -> int:
    biggest = max(range(len(needs)), key=lambda p: needs[p].memory, default=None)
    if biggest is None or not needs[biggest].memory:
        return 0
    budget = memory_budget(options.memory_budget)
    if needs[biggest].memory > budget:
        how = "auto: a share of the RAM available now" if options.memory_budget == "auto" else ""
        raise ConfigError(
            f"task {keys[biggest]!r} needs {human_size(needs[biggest].memory)} of memory but the "
            f"run's memory_budget is {human_size(budget)}{f' ({how})' if how else ''}: "
            "it could never start"
        )
    return budget


def memory_budget(setting: int | str) -> int:
    if setting == "auto":
        import psutil  # here, not at the top: a first corral.map need not pay its ~10 ms import

        return int(psutil.virtual_memory().available * MEMORY_SAFETY)
    return int(setting)


def _resolve_deps(keys: Sequence[Any], needs: Sequence[Needs]) -> list[tuple[int, ...]]:
    if not any(n.after for n in needs):
        return [()] * len(needs)
    where: dict[Any, int] = {}
    ambiguous: set[Any] = set()
    for pos, key in enumerate(keys):
        if key in where:
            ambiguous.add(key)
        where[key] = pos
    deps = []
    for pos, need in enumerate(needs):
        resolved = []
        for key in need.after:
            if key not in where:
                raise ConfigError(
                    f"task {keys[pos]!r} depends on {key!r}, which is not a task of this run"
                    + _tuple_key_hint(need.after, where)
                )
            if key in ambiguous:
                raise ConfigError(
                    f"task {keys[pos]!r} depends on {key!r}, which is the key of more than one "
                    "task of this run (a task without a key is known by its position)"
                )
            resolved.append(where[key])
        deps.append(tuple(resolved))
    return deps


def _tuple_key_hint(after: tuple[Any, ...], where: Mapping[Any, int]) -> str:
    """``after=("tas", 1980)`` is two keys; when a task's key is that tuple, say so."""
    if len(after) > 1 and after in where:
        return f"; a task has the key {after!r}: to depend on it, write after=[{after!r}]"
    return ""


def _topological_order(keys: Sequence[Any], deps: list[tuple[int, ...]]) -> list[int]:
    """Positions, each after all its dependencies; a cycle is a ConfigError that names it."""
    n = len(deps)
    state = bytearray(n)  # 0 new, 1 on the current path, 2 done
    order: list[int] = []
    for root in range(n):
        if state[root]:
            continue
        path: list[int] = [root]
        children: list[Iterable[int]] = [iter(deps[root])]
        state[root] = 1
        while path:
            child = next(children[-1], None)  # type: ignore[call-overload]
            if child is None:
                state[path[-1]] = 2
                order.append(path.pop())
                children.pop()
            elif state[child] == 1:
                cycle = [*path[path.index(child) :], child]
                raise ConfigError(
                    "dependency cycle: " + " -> ".join(repr(keys[p]) for p in reversed(cycle))
                )
            elif state[child] == 0:
                state[child] = 1
                path.append(child)
                children.append(iter(deps[child]))
    return order


def _upward_rank(
    needs: Sequence[Needs], deps: list[tuple[int, ...]], order: list[int]
) -> list[float]:
    """A task's cost plus the costliest chain of tasks that wait for it: among ready tasks the
    highest goes first. Without dependencies this is the cost itself (longest first); with
    them, a cheap task that a long chain waits on is not left for last."""
    rank = [n.cost or 0.0 for n in needs]
    for pos in reversed(order):  # dependants before their dependencies
        for dep in deps[pos]:
            through = (needs[dep].cost or 0.0) + rank[pos]
            if through > rank[dep]:
                rank[dep] = through
    return rank


def check_item_specs(specs: Mapping[str, Any]) -> None:
    """Reject a spec that is neither callable nor a plausible constant, before any work."""
    for name, spec in specs.items():
        if spec is None or callable(spec):
            continue
        check: Callable[[Any], Any] = {
            "locks": norm_locks,
            "uses": norm_uses,
            "memory": norm_memory,
            "after": norm_after,
            "cost": norm_cost,
            "priority": norm_priority,
            "group": norm_group,
        }[name]
        check(spec)
