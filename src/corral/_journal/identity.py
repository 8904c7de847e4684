"""A journaled task's identity: its key, and a digest of the call.

    key          map: the input position; run: the Task's key (its position when it has none)
    fn identity  journal_code="name":   "module:qualname"
                 journal_code="source": that, plus a hash of the function's source and of the
                                        functions of the same module it calls (by name)
                 journal_code="ignore": ""  (the function never invalidates a result)
    digest       8 bytes of the fn identity's hash + 16 bytes of the arguments' hash
                 (BLAKE2b of their pickle, protocol 5; journal_inputs="key": no arguments hash)

Two digests are compared in their two halves, so that a changed task can be reported as
"function" or "arguments" changed.

A pickle is a stable fingerprint of a value when its bytes depend only on the value. That
fails for a set or frozenset of strings, bytes or tuples (their iteration order follows the
per-process string hash), and for values that do not pickle with the standard pickle
(lambdas, locks, open files). ``fingerprints`` checks for both and names the culprit; the
user may then ask for ``journal_inputs="key"`` (identity by key alone).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import pickle
import textwrap
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._errors import ConfigError

FN_BYTES = 8
ARGS_BYTES = 16
DIGEST_BYTES = FN_BYTES + ARGS_BYTES
CODE_MODES = ("ignore", "name", "source")
INPUT_MODES = ("digest", "key")
_NO_ARGS = bytes(ARGS_BYTES)
BOTH = "function and arguments"
_STABLE_SET_ITEMS = (int, float, bool, type(None))
# pickle opcodes that build a set or frozenset (protocol 4+): EMPTY_SET, FROZENSET
_SET_OPCODES = (b"\x8f", b"\x91")


def fn_identity(fn: Callable[..., Any], mode: str) -> str:
    """What of a function counts for ``journal_code`` (see the module docstring)."""
    if mode == "ignore":
        return ""
    target = inspect.unwrap(fn) if callable(fn) else fn
    module = getattr(target, "__module__", None) or type(target).__module__
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    ident = f"{module}:{name}"
    if mode == "source":
        ident += ":" + _source_hash(target)
    return ident


def fn_digest(identity: str) -> bytes:
    return hashlib.blake2b(identity.encode(), digest_size=FN_BYTES).digest()


def _source_hash(fn: Any) -> str:
    """The hash of ``fn``'s source and of the sources of the functions of its module that it
    names (one level deep: what a helper calls is not followed)."""
    h = hashlib.blake2b(digest_size=16)
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):  # a builtin, or defined where no source is kept
        code = getattr(fn, "__code__", None)
        h.update(code.co_code if code is not None else repr(fn).encode())
        return h.hexdigest()
    h.update(source.encode())
    module = inspect.getmodule(fn)
    try:
        names = sorted({n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)})
    except SyntaxError:
        names = []
    for name in names:
        other = getattr(module, name, None) if module is not None else None
        if other is fn or not inspect.isfunction(other) or other.__module__ != fn.__module__:
            continue
        try:
            h.update(name.encode() + b"\0" + inspect.getsource(other).encode())
        except (OSError, TypeError):
            continue
    return h.hexdigest()


def fingerprints(
    fn_digests: Sequence[bytes], calls: Sequence[Any], keys: Sequence[Any], inputs: str
) -> list[bytes]:
    """The digest of each call (``fn_digests[i]`` + the hash of ``calls[i]``'s pickle).

    Raises ConfigError naming the first item whose arguments cannot be fingerprinted
    stably, before any work starts.
    """
    if inputs == "key":
        return [d + _NO_ARGS for d in fn_digests]
    blake, dumps = hashlib.blake2b, pickle.dumps
    out = []
    try:
        for fd, call in zip(fn_digests, calls, strict=True):
            blob = dumps(call, 5)
            if (_SET_OPCODES[0] in blob or _SET_OPCODES[1] in blob) and _unstable(call):
                raise _Unstable(call)
            out.append(fd + blake(blob, digest_size=ARGS_BYTES).digest())
    except _Unstable as bad:
        raise ConfigError(_unstable_message(keys[len(out)], bad.value)) from None
    except Exception as exc:
        raise ConfigError(
            f"journal: the arguments of task {keys[len(out)]!r} cannot be fingerprinted: "
            f"they do not pickle ({type(exc).__name__}: {exc}). Give the task a stable key "
            'and pass journal_inputs="key" to identify journaled tasks by key alone'
        ) from None
    return out


class _Unstable(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


def _unstable_message(key: Any, value: Any) -> str:
    return (
        f"journal: the arguments of task {key!r} cannot be fingerprinted stably: they hold a "
        f"set of strings or other hash-ordered values ({_short(value)}), whose pickle changes "
        "from one process to the next. Pass a sorted list or tuple instead, or pass "
        'journal_inputs="key" to identify journaled tasks by key alone'
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unstable(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds a set whose pickle order depends on the string hash seed.
    Walks lists, tuples, dicts and sets (and objects' ``__dict__``) a few levels deep."""
    if depth > 6:
        return False
    if isinstance(value, (set, frozenset)):
        return not all(type(v) in _STABLE_SET_ITEMS for v in value)
    if isinstance(value, (list, tuple)):
        return any(_unstable(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(_unstable(v, depth + 1) for v in _items(value))
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict):
        return any(_unstable(v, depth + 1) for v in state.values())
    return False


def _items(d: dict[Any, Any]) -> Iterable[Any]:
    for k, v in d.items():
        yield k
        yield v


def changed(old: bytes, new: bytes, ignore_fn: bool = False) -> str:
    """What differs between two digests: "function", "arguments" or "function and arguments"
    ("" when equal). ``ignore_fn`` (journal_code="ignore"): the function never differs, so
    results journaled under any journal_code are kept."""
    fn = not ignore_fn and old[:FN_BYTES] != new[:FN_BYTES]
    args = old[FN_BYTES:] != new[FN_BYTES:]
    if fn and args:
        return BOTH
    return "function" if fn else "arguments" if args else ""


def check_modes(code: str, inputs: str) -> None:
    if code not in CODE_MODES:
        raise ConfigError(f"journal_code must be one of {', '.join(CODE_MODES)}, not {code!r}")
    if inputs not in INPUT_MODES:
        raise ConfigError(f"journal_inputs must be one of {', '.join(INPUT_MODES)}, not {inputs!r}")
