"""A journaled task's identity: its key, and a digest of the call.

    key          map: the input position; run: the Task's key (its position when it has none)
    fn identity  journal_code="name":   "module:qualname"
                 journal_code="source": that, plus a hash of the function's source and of the
                                        functions of the same module it calls (by name)
                 journal_code="ignore": ""  (the function never invalidates a result)
    digest       of a Call's tasks together (``call_digest``): 16 bytes of BLAKE2b over
                 their fn identities' hashes (8 bytes each) and the pickle (protocol 5) of
                 their arguments as one list; journal_inputs="key": the fn hashes alone.
    detail       kept with it, to tell which task of a Call changed, and how: the fn hashes,
                 and the arguments' pickle itself when small (``DETAIL_INLINE``), else a
                 16-byte hash per task (``Detail``)

Hashing a Call's arguments as one pickle is what keeps the journal cheap on trivial tasks:
one C-level pickle and one hash per Call, no Python work per task (the digest of each task
apart would cost more than such a task). At resume the same digest is computed over the
new arguments of the Call's keys: equal (the usual case), every task of it is unchanged;
otherwise the detail says which task changed, and whether its function or its arguments.

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
_FLAT = frozenset((int, float, bool, type(None), str, bytes, complex))
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


DETAIL_INLINE = 64 * 1024
"""A Call's arguments pickle up to this size is kept whole in its detail; a bigger one, as a
hash per task."""


def check_inputs(calls: Sequence[Any], keys: Sequence[Any], inputs: str) -> None:
    """Raise ConfigError, before any work starts, naming the first task whose arguments
    cannot be fingerprinted stably (do not pickle, or hold a hash-ordered set).

    Cheap when there is nothing to find: inputs all of flat types (numbers, strings, bytes)
    are known good from their types alone (one C-level pass); others are pickled once, all
    together. Only when that fails, or shows a set, are the tasks looked at one by one."""
    if inputs == "key" or not calls:
        return
    if set(map(type, calls)) <= _FLAT:
        return
    try:
        blob = pickle.dumps(list(calls), 5)
    except Exception:
        fingerprints([b""] * len(calls), calls, keys, inputs)  # names the one that fails
        return
    if _SET_OPCODES[0] in blob or _SET_OPCODES[1] in blob:  # perhaps: the bytes may be data
        for key, call in zip(keys, calls, strict=False):
            if _unstable(call):
                raise ConfigError(_unstable_message(key, call))


def digest_of(fn_part: bytes, calls: list[Any], inputs: str) -> bytes:
    """A Call's digest alone (what resume compares)."""
    if inputs == "key":
        return hashlib.blake2b(fn_part, digest_size=ARGS_BYTES).digest()
    return hashlib.blake2b(fn_part + pickle.dumps(calls, 5), digest_size=ARGS_BYTES).digest()


def call_digest(fn_part: bytes, calls: list[Any], inputs: str) -> tuple[bytes, bytes]:
    """A Call's digest and its detail (see the module docstring). ``fn_part``: each task's
    fn hash, concatenated (a map: its one function's hash, once)."""
    if inputs == "key":
        return digest_of(fn_part, calls, inputs), pickle.dumps((fn_part, None, None), 5)
    blob = pickle.dumps(calls, 5)
    digest = hashlib.blake2b(fn_part + blob, digest_size=ARGS_BYTES).digest()
    if len(blob) <= DETAIL_INLINE:
        return digest, pickle.dumps((fn_part, blob, None), 5)
    each = b"".join(_args_hash(call) for call in calls)
    return digest, pickle.dumps((fn_part, None, each), 5)


def _args_hash(call: Any) -> bytes:
    return hashlib.blake2b(pickle.dumps(call, 5), digest_size=ARGS_BYTES).digest()


class Detail:
    """A journaled Call's detail, read back: which of its tasks differ from new ones."""

    def __init__(self, blob: bytes) -> None:
        self.fn_part, items, self.each = pickle.loads(blob)
        self.items: list[Any] | None = pickle.loads(items) if items is not None else None

    def changed(self, offset: int, fn_hash: bytes, call: Any, ignore_fn: bool) -> str:
        """What changed for the task at ``offset`` ("" if nothing), given its new call."""
        fp = self.fn_part
        old_fn = fp[offset * FN_BYTES : (offset + 1) * FN_BYTES] if len(fp) > FN_BYTES else fp
        fn = not ignore_fn and old_fn != fn_hash
        if self.items is not None:
            args = pickle.dumps(self.items[offset], 5) != pickle.dumps(call, 5)
        elif self.each is not None:
            args = self.each[offset * ARGS_BYTES : (offset + 1) * ARGS_BYTES] != _args_hash(call)
        else:  # journal_inputs="key"
            args = False
        if fn and args:
            return BOTH
        return "function" if fn else "arguments" if args else ""


def fingerprints(
    fn_digests: Sequence[bytes], calls: Sequence[Any], keys: Sequence[Any], inputs: str
) -> list[bytes]:
    """The digest of each call apart (``fn_digests[i]`` + the hash of ``calls[i]``'s
    pickle); used to name the task whose arguments cannot be fingerprinted stably.

    Raises ConfigError naming the first such task.
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
