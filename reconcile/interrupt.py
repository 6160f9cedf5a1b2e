"""Stopping cleanly on SIGTERM (what Airflow, ECS and Kubernetes send) and SIGINT (Ctrl-C).

The first signal sets STOP, which reads in worker threads poll (`check`, `sleep`); it interrupts the DuckDB query the
main thread may be blocked in (`on_stop`: a watcher thread learns of the signal through `signal.set_wakeup_fd` even
while the main thread runs C code); and it raises `Interrupted` in the main thread, which unwinds through every
`finally`: reads stop and release what they hold (DLQ messages), partial outputs are removed, the state lock is let
go. The CLI then exits 128 + the signal number: 130 for SIGINT, 143 for SIGTERM (README, "Exit codes").

A second signal does not interrupt that clean-up (it would skip the releases); only SIGKILL stops at once, and the
state lock (an flock) goes with the process even then.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from .errors import Interrupted

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How long reads get to stop and release what they hold after a signal: inside the 30 s that Kubernetes
# (terminationGracePeriodSeconds) and ECS (stopTimeout) allow before they send SIGKILL.
GRACE_S = 20.0

STOP = threading.Event()
_lock = threading.Lock()
_signum: int | None = None
_at = 0.0  # time.monotonic() of the first signal
_raised = False
_deferred = 0
_finishing = False  # the run committed (deferred(then_stop=False) ended): a signal from here on is only noted
_callbacks: dict[object, Callable[[], object]] = {}


def received() -> int | None:
    """The signal that asked this process to stop, if one did."""
    return _signum


def remaining() -> float:
    """Seconds left of the grace period that began with the signal."""
    return max(0.0, _at + GRACE_S - time.monotonic())


def check() -> None:
    """Raise Interrupted if a signal asked the process to stop (call it between units of work); after a run committed
    nothing stops it (deferred)."""
    if STOP.is_set() and not _finishing:
        raise Interrupted(_signum or signal.SIGTERM)


def sleep(seconds: float) -> None:
    """time.sleep that a signal cuts short (with Interrupted)."""
    if seconds > 0:
        STOP.wait(seconds)
    check()


def on_stop(fn: Callable[[], object]) -> Callable[[], None]:
    """Call `fn` (from another thread) when a signal arrives, e.g. a DuckDB connection's `interrupt`, which stops
    the query the main thread is blocked in. Returns the function that cancels this."""
    key = object()
    with _lock:
        _callbacks[key] = fn
    return lambda: _callbacks.pop(key, None)


@contextmanager
def deferred(*, then_stop: bool = True) -> Iterator[None]:
    """A few steps that happen together or not at all (the run's commit, a DLQ receive and the record of what it
    holds): a signal during them takes effect after. Only the main thread is ever interrupted mid-step (Python runs
    signal handlers there); a worker thread polls STOP instead, so for it this is a no-op. `then_stop=False`: steps
    after which the work is done (a run's commit): a signal during them, or after them, no longer stops it -- what is
    left (the state's upload, the bundle, the publish, the alert) finishes, and the exit code is the result's, not
    the signal's (a run stopped there exited 143 "re-run it" with its result recorded and no alert sent)."""
    global _deferred, _raised, _finishing
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
    if not then_stop:
        _finishing = True
    if STOP.is_set() and not then_stop:
        logger.warning("%s arrived as the run committed: finishing it (its exit code is the result's)",
                       signal.Signals(_signum or signal.SIGTERM).name)
        return
    if STOP.is_set() and not _raised and not _deferred and not _finishing:
        _raised = True
        raise Interrupted(_signum or signal.SIGTERM)


def begin() -> None:
    """A run begins (reconcile/run.py execute; the demo runs several in one process): a signal stops it again until
    it commits, and one that arrived while the last run finished stops it now, before it reads anything."""
    global _finishing, _raised
    _finishing = False
    if STOP.is_set() and not _raised:
        _raised = True
        raise Interrupted(_signum or signal.SIGTERM)


def finishing() -> bool:
    """Whether the run committed: a signal from now on is noted, not acted upon (its exit code is the result's)."""
    return _finishing


def expire() -> None:
    """Stop the reads as a signal does, without one (a read deadline passed): STOP is set, and shutdown gives them
    GRACE_S from now to stop and release what they hold. The caller raises its own error: no Interrupted follows."""
    global _at, _raised
    with _lock:
        if not STOP.is_set():
            _at = time.monotonic()
        _raised = True
    STOP.set()


def shutdown(pool: ThreadPoolExecutor, futures: Iterable[Future]) -> None:
    """Shut a pool down: wait for its work, or after a signal give it GRACE_S to stop and release what it holds."""
    if not STOP.is_set():
        pool.shutdown(wait=True)
        return
    pool.shutdown(wait=False, cancel_futures=True)
    running = [f for f in futures if not f.done()]
    if running:
        logger.info("stopping: waiting up to %.0f s for %d read(s) to stop and release what they hold",
                    remaining(), len(running))
    _, running = wait(running, timeout=remaining())
    if running:
        logger.warning("%d read(s) did not stop within %.0f s of the %s; exiting without them", len(running),
                       GRACE_S, "signal" if _signum else "deadline")


class Abandonable:
    """`fn()` in a daemon thread, waited for up to a deadline and then left to itself: a call botocore's timeouts do
    not bound (a body trickled a byte at a time beats every per-read timeout) cannot hold the process, which never
    joins a daemon thread at exit. A signal cuts the main thread's wait short with Interrupted, as it cuts any wait --
    but after a run committed, when a signal is only noted (deferred): then `ended_by(..., on_stop=True)` ends the wait
    once a signal came (a scheduler's SIGKILL follows SIGTERM within seconds)."""

    def __init__(self, fn: Callable[[], Any], name: str):
        self._box: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._work, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _work(self, fn: Callable[[], Any]) -> None:
        try:
            self._box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - raised where the result is asked for
            self._box["error"] = e

    def ended_by(self, deadline: float, *, on_stop: bool = False) -> bool:
        """Wait until `deadline` (time.monotonic()) at most, or (`on_stop`) until a signal came: whether fn has
        ended."""
        while self._thread.is_alive() and (left := deadline - time.monotonic()) > 0:
            if on_stop and STOP.is_set():
                break
            self._thread.join(min(left, 0.25) if on_stop else left)
        return not self._thread.is_alive()

    def result(self) -> Any:
        """fn's value, or its exception raised (once it has ended)."""
        if "error" in self._box:
            raise self._box["error"]
        return self._box.get("value")


def bounded(fn: Callable[[], Any], name: str, seconds: float, late: Callable[[], BaseException]) -> Any:
    """fn()'s value, waited for `seconds` at most (Abandonable): past them, `late()` is raised and fn is left to
    itself. A signal before the run commits cuts the wait short (Interrupted); after it, the wait goes on, as the
    commit's other steps do (an upload the run records itself by is not dropped because a scheduler asked it to
    stop: its SIGKILL ends the process if it will not wait)."""
    call = Abandonable(fn, name)
    if not call.ended_by(time.monotonic() + seconds):
        raise late()
    return call.result()


def _note(signum: int) -> None:
    global _signum, _at
    with _lock:
        if _signum is None:
            _signum, _at = signum, time.monotonic()
        callbacks = list(_callbacks.values())
    STOP.set()
    for fn in callbacks:
        try:
            fn()
        except Exception:  # noqa: BLE001 - a connection already closed has nothing to interrupt
            pass


def _handle(signum: int, frame) -> None:
    global _raised
    _note(signum)  # while finishing too: the next run of the process (the demo's next day) begins by stopping
    if _finishing:
        logger.warning("%s arrived after the run committed: finishing it (its exit code is the result's); SIGKILL "
                       "stops at once", signal.Signals(signum).name)
        return
    if _raised:
        logger.warning("%s again: still stopping (releasing the lock and what the reads hold); SIGKILL stops at "
                       "once", signal.Signals(signum).name)
        return
    if _deferred:
        return
    _raised = True
    raise Interrupted(signum)


def _watch(fd: int) -> None:
    try:
        while data := os.read(fd, 64):
            for signum in data:
                if signum in SIGNALS:
                    _note(signum)
    finally:
        os.close(fd)


@contextmanager
def handlers() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted in the main thread while the block runs (a signal the parent set to
    be ignored, like SIGINT for a background job, stays ignored)."""
    global _signum, _raised, _finishing
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOP.clear()
    _signum, _raised, _finishing = None, False, False
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    r, w = os.pipe()
    os.set_blocking(w, False)
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(r,), name="reconcile-signals", daemon=True).start()
    try:
        for s in SIGNALS:
            if previous[s] != signal.SIG_IGN:
                signal.signal(s, _handle)
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(old_fd)
        os.close(w)  # the watcher reads EOF and ends
