"""Values, functions and exceptions across the wire.

Everything travels as base64 text of a cloudpickle, inside JSON, so one protocol carries
any Python value. The caller's own modules are pickled by value, so a worker needs none
of the caller's files: helpers, constants and exception classes travel with the function,
and cloudpickle's class tracking gives the caller back its own exception class.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import sysconfig
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cloudpickle

_STDLIB_PATHS = tuple(
    {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
)
# cloudpickle's by-value registry is process-wide; one pickling at a time may change it.
_by_value_lock = threading.Lock()


class SerializationError(Exception):
    """A value could not be pickled or unpickled."""


class RemoteExecutionError(Exception):
    """The remote function raised an exception whose type cannot be rebuilt here."""

    def __init__(self, message: str, error_type: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type
        self.remote_traceback = remote_traceback


@contextmanager
def _user_module_by_value(module_name: str) -> Iterator[None]:
    """Pickle the caller's own module by value while inside, so workers need no copy of it."""
    module = sys.modules.get(module_name)
    by_value = module_name != "__main__" and _is_user_module(module)
    with _by_value_lock:
        if by_value:
            cloudpickle.register_pickle_by_value(module)
        try:
            yield
        finally:
            if by_value:
                cloudpickle.unregister_pickle_by_value(module)


def encode(value: Any, module_name: str = "__main__") -> str:
    """Pickle a value; classes of `module_name` (the caller's module) travel by value."""
    try:
        with _user_module_by_value(module_name):
            payload = cloudpickle.dumps(value)
    except Exception as exc:
        raise SerializationError(f"Failed to serialize {type(value).__name__}: {exc}") from exc
    return base64.b64encode(payload).decode("ascii")


def decode(text: str) -> Any:
    try:
        return cloudpickle.loads(base64.b64decode(text))
    except Exception as exc:
        raise SerializationError(f"Failed to deserialize value: {exc}") from exc


def _is_user_module(module: types.ModuleType | None) -> bool:
    """True for the caller's own code (scripts, tests, project modules), not installed packages."""
    if module is None or module.__name__ in sys.builtin_module_names:
        return False
    file = getattr(module, "__file__", None)
    if not file:
        return False
    return not file.startswith(_STDLIB_PATHS) and module.__name__.split(".")[0] != "runpod_flash"


def encode_function(func: types.FunctionType) -> tuple[str, str]:
    """Pickle a function by value with everything it uses; returns (payload, sha256)."""
    try:
        with _user_module_by_value(func.__module__):
            payload = cloudpickle.dumps(func)
    except Exception as exc:
        raise SerializationError(
            f"Function '{func.__qualname__}' cannot be shipped to a worker: {exc}. "
            "Define it at module level and keep what it uses picklable."
        ) from exc
    return base64.b64encode(payload).decode("ascii"), hashlib.sha256(payload).hexdigest()


def encode_exception(exc: BaseException) -> str | None:
    """The exception itself, or None when it cannot be pickled (the caller gets its text)."""
    try:
        text = encode(exc)
        cloudpickle.loads(base64.b64decode(text))
    except Exception:
        return None
    return text


def rebuild_exception(
    pickled: str | None, error_type: str, message: str, remote_traceback: str
) -> BaseException:
    """The remote exception as its own type when possible, with the remote traceback noted."""
    exc: BaseException | None = None
    if pickled:
        try:
            exc = decode(pickled)
        except SerializationError:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteExecutionError(f"{error_type}: {message}", error_type, remote_traceback)
    exc.remote_traceback = remote_traceback  # type: ignore[attr-defined]
    if remote_traceback and hasattr(exc, "add_note"):
        exc.add_note("Remote traceback (most recent call last):\n" + remote_traceback)
    return exc
