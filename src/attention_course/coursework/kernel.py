"""In the student's kernel: the guard, the audit hook, and the hidden cases.

Nothing here imports otter, so the module imports on Colab without it.  The hidden cases come
pickled in each otter test file (made by :mod:`.assignment` on the instructor's machine); this
module runs the student's names on them with the course's references switched off.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import os
import pickle
import signal
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

CASE_LIMIT_S = 10  # each hidden case

GUARD_SOURCE = r'''
# attention-course grading guard: output cap, time limits, exit(), progress log
def _attention_course_guard():
    import builtins, os, signal, sys
    from IPython import get_ipython

    ip = get_ipython()
    # make grade sets the scratch folder; under a plain `otter run` or on Gradescope: the cwd
    scratch = os.environ.get("ATTENTION_COURSE_SCRATCH") or os.getcwd()
    # the import cell's CONFIG as make grade sets it, on Gradescope too (no experiment runs)
    os.environ.setdefault("ATTENTION_COURSE_FAST", "1")
    log = open(os.path.join(scratch, "progress.log"), "a", buffering=1)
    sys.modules["__attention_course_log__"] = log
    cap = int(os.environ.get("ATTENTION_COURSE_OUTPUT_CAP", "1000000"))
    limit = int(os.environ.get("ATTENTION_COURSE_CELL_LIMIT", "10"))
    printed = [0, False]

    import contextlib
    import ipykernel.iostream as iostream

    write = iostream.OutStream.write

    def capped(self, text, *args, **kwargs):
        if printed[0] + len(text) > cap:
            if not printed[1]:
                printed[1] = True
                log.write("truncated\n")
                write(self, "\n[output truncated by the grader]\n")
            return len(text)
        printed[0] += len(text)
        return write(self, text, *args, **kwargs)

    iostream.OutStream.write = capped
    # IPython 9 wraps each stream's bound write for its output history, cell by cell, and puts
    # the bound method back as an instance attribute: no history, and the instance attributes
    # are dropped before each cell (pre) so that the capped class method is the one called.
    ip._tee = lambda channel: contextlib.nullcontext()
    format_data = ip.displayhook.write_format_data

    def capped_display(format_dict, md_dict=None):
        if sum(len(str(v)) for v in format_dict.values()) > cap:
            log.write("truncated\n")
            format_dict = {"text/plain": "[output truncated by the grader]"}
        return format_data(format_dict, md_dict)

    ip.displayhook.write_format_data = capped_display

    def alarm(signum, frame):
        raise TimeoutError(f"ran longer than {limit} s")

    signal.signal(signal.SIGALRM, alarm)
    current = [None]

    def pre(info):
        for stream in (sys.stdout, sys.stderr):
            vars(stream).pop("write", None)
        first = (info.raw_cell or "").split("\n", 1)[0]
        current[0] = first[len("# exercise: "):].strip() if first.startswith("# exercise: ") else None
        if current[0]:
            log.write(f"cell {current[0]}\n")
            signal.setitimer(signal.ITIMER_REAL, limit)

    def post(result):
        signal.setitimer(signal.ITIMER_REAL, 0)
        error = result.error_in_exec or result.error_before_exec
        if current[0] and error is not None:
            kind = type(error).__name__
            log.write(f"error {current[0]} {kind}\n")

    ip.events.register("pre_run_cell", pre)
    ip.events.register("post_run_cell", post)

    def no_exit(*args, **kwargs):
        raise SystemExit("exit() called")

    builtins.exit = builtins.quit = no_exit
    ip.user_ns["exit"] = ip.user_ns["quit"] = no_exit
    ip.ask_exit = lambda: None


_attention_course_guard()
del _attention_course_guard
'''

AUDIT_SOURCE = r'''
# attention-course grading guard: no writes or deletes outside this folder, no subprocesses
def _attention_course_audit():
    import os, sys

    if not os.environ.get("ATTENTION_COURSE_SCRATCH"):
        return  # a plain `otter run` or Gradescope: otter writes results to /tmp; no hook
    scratch = os.path.realpath(os.environ["ATTENTION_COURSE_SCRATCH"]) + os.sep
    log = sys.modules["__attention_course_log__"]
    realpath, fspath, getcwd, join = os.path.realpath, os.fspath, os.getcwd, os.path.join
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    path_events = {
        "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
        "os.symlink", "os.link", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile",
        "shutil.copytree", "shutil.chown", "os.chflags", "os.lchmod", "os.lchown", "os.setxattr",
        "os.removexattr", "shutil.unpack_archive", "shutil.make_archive",
    }
    refused = {
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
        "os.forkpty", "os.kill", "os.killpg", "ctypes.dlopen", "ctypes.dlsym",
        "ctypes.call_function", "os.startfile", "pty.spawn", "sys.remote_exec",
    }

    def outside(path):
        if path is None or isinstance(path, int):
            return False
        try:
            path = fspath(path)
            if isinstance(path, bytes):
                path = path.decode(errors="replace")
            full = realpath(join(getcwd(), path))
        except Exception:
            return True
        return full != "/dev/null" and not (full + os.sep).startswith(scratch)

    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(flags, int) and flags & write_flags) or (
                isinstance(mode, str) and any(c in mode for c in "wax+")
            )
            if writing and outside(path):
                log.write(f"blocked write {path}\n")
                raise PermissionError(f"grading: writing outside the working folder: {path}")
        elif event in path_events:
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)) and outside(path):
                    log.write(f"blocked {event} {path}\n")
                    raise PermissionError(f"grading: {event} outside the working folder: {path}")
        elif event in refused:
            log.write(f"blocked {event}\n")
            raise PermissionError(f"grading: {event} is not allowed")

    sys.addaudithook(hook)


_attention_course_audit()
del _attention_course_audit
'''


class ReferenceOff(RuntimeError):
    """Raised by a course function that is switched off while a student's code runs."""


def _resolve(path: str):
    module, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(f"attention_course.{module}"), attr)


def python_function(obj):
    """The plain Python function under ``obj`` (jax.jit and functools.wraps unwrapped)."""
    seen = 0
    while not hasattr(obj, "__code__") and hasattr(obj, "__wrapped__") and seen < 10:
        obj, seen = obj.__wrapped__, seen + 1
    return obj if hasattr(obj, "__code__") else None


def _stub_code(path: str, freevars: tuple[str, ...]):
    """A code object that raises :class:`ReferenceOff`, with the same free variables."""
    closure = "".join(f"    {v} = None\n" for v in freevars)
    uses = "".join(f"        {v}\n" for v in freevars)
    source = (
        "def outer():\n"
        f"{closure}"
        "    def off(*args, **kwargs):\n"
        f"{uses}"
        f"        raise __ReferenceOff(\"attention_course.{path} is switched off while grading: \"\n"
        "                             \"write your own\")\n"
        "    return off\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    return namespace["outer"]().__code__


@contextlib.contextmanager
def references_off(paths: Iterable[str]):
    """While inside, every course function in ``paths`` raises :class:`ReferenceOff`, however the
    student reached it (an alias, ``from ... import``, a ``functools.partial``, a function of the
    course that calls it): its code object is swapped, and JAX's caches are cleared so a jitted
    copy traced earlier cannot answer either."""
    import jax

    swapped = []
    try:
        for path in paths:
            fn = python_function(_resolve(path))
            if fn is None:
                continue
            stub = _stub_code(path, fn.__code__.co_freevars)
            fn.__globals__.setdefault("__ReferenceOff", ReferenceOff)
            swapped.append((fn, fn.__code__))
            fn.__code__ = stub
        jax.clear_caches()
        yield
    finally:
        for fn, code in swapped:
            fn.__code__ = code
        jax.clear_caches()


@contextlib.contextmanager
def _time_limit(seconds: float):
    def alarm(signum, frame):
        raise TimeoutError(f"ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _log(line: str) -> None:
    log = sys.modules.get("__attention_course_log__")
    if log is not None:
        try:
            log.write(line + "\n")
        except Exception:  # noqa: BLE001
            pass



# --------------------------------------------------------------------------------------------
# The hidden cases, as the test files carry them
# --------------------------------------------------------------------------------------------


class JaxArray:
    """A JAX array in a pickled case (kept as NumPy, made a JAX array again in the kernel), so
    the test file does not depend on the JAX version that made it."""

    def __init__(self, array: np.ndarray):
        self.array = array


class Raised:
    """The expected outcome of a case on which the reference raises: the same kind of error."""

    def __init__(self, kind: str):
        self.kind = kind


def _map_leaves(value: Any, leaf) -> Any:
    """``value`` with ``leaf`` applied to everything that is not a tuple, list or dict."""
    if isinstance(value, tuple):
        return tuple(_map_leaves(v, leaf) for v in value)
    if isinstance(value, list):
        return [_map_leaves(v, leaf) for v in value]
    if isinstance(value, dict):
        return {k: _map_leaves(v, leaf) for k, v in value.items()}
    return leaf(value)


def _is_jax_array(value: Any) -> bool:
    return hasattr(value, "__array__") and hasattr(value, "shape") and not isinstance(
        value, (np.ndarray, np.generic))


def freeze(value: Any) -> Any:
    """``value`` with every JAX array as :class:`JaxArray` (for pickling)."""
    return _map_leaves(value, lambda v: JaxArray(np.asarray(v)) if _is_jax_array(v) else v)


def thaw(value: Any) -> Any:
    """``value`` with every :class:`JaxArray` a JAX array again."""

    def leaf(v):
        if not isinstance(v, JaxArray):
            return v
        import jax.numpy as jnp

        return jnp.asarray(v.array)

    return _map_leaves(value, leaf)


def numpy_tree(value: Any) -> Any:
    """``value`` with every array as a NumPy array (what is compared)."""
    return _map_leaves(value, lambda v: np.asarray(v) if _is_jax_array(v) else v)


def encode(value: Any) -> str:
    return base64.b64encode(pickle.dumps(value, protocol=4)).decode("ascii")


def decode(blob: str | Iterable[str]) -> Any:
    return pickle.loads(base64.b64decode("".join(blob)))


def _argument(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype") and np.ndim(value) > 0:
        dims = ", ".join(str(d) for d in np.shape(value))
        return f"{np.dtype(value.dtype).name if value.dtype != object else 'object'}[{dims}]"
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"a {type(value).__name__} of {len(value)}"
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 24 else text[:21] + "..."


def describe_case(fn: Any, case: Any) -> str:
    """The arguments of a case, named after ``fn``'s parameters: ``T=17`` for numbers, the
    dtype and shape of arrays (``q: float32[2, 4, 3]``): enough to rebuild a case like it."""
    import inspect

    args = case if isinstance(case, tuple) else (case,) if not isinstance(case, dict) else ()
    kwargs = case if isinstance(case, dict) else {}
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        names = []
    parts = []
    for k, value in enumerate(args):
        name = names[k] if k < len(names) else f"arg{k + 1}"
        shown = _argument(value)
        parts.append(f"{name}: {shown}" if "[" in shown and not shown.startswith(("[", "(")) else
                     f"{name}={shown}")
    parts += [f"{k}={_argument(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def run_hidden_cases(env: dict, label: str, blob: str | Iterable[str]) -> None:
    """Otter's test body: run the student's names of exercise ``label`` on its hidden cases.

    Raises AssertionError with one line (which name, which hidden case and its arguments, what
    was expected) unless every case passes; otter turns that into the exercise's score and
    feedback.  The student's code runs with the course's references switched off and with
    float32 products at the highest precision, as the expected values were computed.
    """
    from attention_course.grading import _call, _compare, _describe_exception, _short, numerics

    skipped = os.environ.get("ATTENTION_COURSE_SKIP", "").split(",")
    if label in skipped:
        raise AssertionError("not graded: its cell stopped the kernel or ran out of time")
    _log(f"test {label}")
    spec = decode(blob)
    for part in spec["parts"]:
        name = part["name"]
        if name not in env:
            raise AssertionError(f"{name} is not defined (did its cell run without error?)")
        got_object = env[name]
        cases = part["cases"]
        for n, (case, want) in enumerate(zip(cases, part["expected"]), start=1):
            case = thaw(case)
            where = name
            if part["kind"] == "function":
                where = f"{name}: hidden case {n} of {len(cases)} ({describe_case(got_object, case)})"
            try:
                with _time_limit(CASE_LIMIT_S), references_off(spec["off"]), numerics():
                    got = _call(got_object, case) if part["kind"] == "function" else got_object
                    got = numpy_tree(got)
            except NotImplementedError:
                raise AssertionError(f"{name}: not implemented yet") from None
            except ReferenceOff as error:
                _log(f"reference {label}")
                raise AssertionError(f"{where}: {error}") from None
            except TimeoutError:
                _log(f"timeout {label}")
                raise AssertionError(f"{where}: ran longer than {CASE_LIMIT_S} s") from None
            except PermissionError as error:
                raise AssertionError(f"{where}: {error}") from None
            except BaseException as error:  # noqa: BLE001 -- SystemExit, KeyboardInterrupt too
                if isinstance(want, Raised) and type(error).__name__ == want.kind:
                    continue
                _log(f"exit {label}" if isinstance(error, SystemExit) else
                     f"raised {label} {type(error).__name__}")
                raise AssertionError(f"{where}: raised {_describe_exception(error)}") from None
            if isinstance(want, Raised):
                raise AssertionError(f"{where}: expected {want.kind}, got no exception")
            problem = _compare(got, want, part["atol"], part["rtol"])
            if problem and part["kind"] == "value":  # the answer itself: do not give it away
                raise AssertionError(f"{where}: not the expected answer (got {_short(got)})")
            if problem:
                if problem.startswith(("[", ".")):  # one output of several
                    problem = f"output {problem}"
                if "abs error" in problem:
                    problem += f" [allowed: {part['atol']:g} + {part['rtol']:g} x |expected|]"
                raise AssertionError(f"{where}: {problem}")
    _log(f"passed {label}")
