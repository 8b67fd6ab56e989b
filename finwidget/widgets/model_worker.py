"""The explorer's model work beside the kernel's message loop: clicks, sweeps, gradients.

Threading. ipykernel hands a widget's custom messages to Python one at a time, on the
kernel's main thread: while a handler runs, no other message (a newer click, a cancel)
is even read. So every request that runs the model is answered from a worker thread
and the main thread returns at once, free to take the next message:

- ``set_ablations`` (a click's exact answer): each click gets a generation number; a
  newer click makes the older run's ``should_stop()`` true, and the older run stops
  before its next layer (``RunCancelled``: an error reply the frontend never shows,
  since its sequence number is no longer the newest in the lane);
- ``sweep``: stops between heads when ``cancel_sweep`` arrives (``sweep_cancel``);
- after a click, the gradients the click estimates read
  (:meth:`ModelSession.prepare_estimates`) are computed in the same worker while nothing
  else wants the model; they step aside (stop between layers, resume later) for any
  click, sweep or Python call that wants it.

Only one thread runs the model at a time: ``explorer.model_lock`` (re-entrant, so a
worker that holds it can set traits whose observers need it). Torch releases the GIL
inside its ops, so the main thread keeps answering what needs no model (attention
views, estimates) while a worker runs. Every run installs its hooks in a ``try`` and
removes them in its ``finally``, cancelled or not, before the lock is released; the
model's training flag is restored the same way (``eval_mode``).
"""

from __future__ import annotations

import contextlib
import threading
import time

from finwidget.interventions.cancel import RunCancelled


class ModelWorker:
    """Runs one explorer's model requests in threads (see the module)."""

    def __init__(self, explorer):
        self.explorer = explorer
        self.generation = 0  # of set_ablations requests
        self._counter = threading.Lock()
        self._wanting = 0  # requests / calls waiting for the model (a gradient pass steps aside)
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ the model lock
    @property
    def model_wanted(self) -> bool:
        return self._wanting > 0

    @contextlib.contextmanager
    def hold_model(self, give_up=None):
        """Hold ``explorer.model_lock`` (waiting for it; a background gradient pass stops
        at its next layer). Yields False, holding nothing, if ``give_up()`` turns true first."""
        lock = self.explorer.model_lock
        with self._counter:
            self._wanting += 1
        try:
            got = False
            while not got:
                got = lock.acquire(timeout=0.02)
                if not got and give_up is not None and give_up():
                    break
        finally:
            with self._counter:
                self._wanting -= 1
        try:
            yield got
        finally:
            if got:
                lock.release()

    def wait_for_model(self, timeout: float = 120.0) -> bool:
        """Acquire ``explorer.model_lock`` (the caller releases it), waiting up to ``timeout``
        seconds while a background gradient pass steps aside; False if a sweep starts meanwhile."""
        deadline = time.monotonic() + timeout
        with self.hold_model(give_up=lambda: self.explorer.sweeping or time.monotonic() > deadline) as got:
            if got:
                self.explorer.model_lock.acquire()  # re-entrant: kept after the context releases its hold
        return got

    def _start(self, target, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def join(self, timeout: float | None = None) -> None:
        """Wait for every worker thread started so far (tests, benchmarks)."""
        for thread in list(self._threads):
            thread.join(timeout)

    # ------------------------------------------------------------------ requests
    def click(self, content: dict, send) -> threading.Thread:
        """Answer a ``set_ablations`` request in a thread; it supersedes every older one."""
        from finwidget.widgets.handlers import handle_request
        from finwidget.widgets.protocol import error_reply

        with self._counter:
            self.generation += 1
            mine = self.generation

        def superseded() -> bool:
            return self.generation != mine

        def work():
            with self.hold_model(give_up=superseded) as got:
                if not got or superseded():
                    send(*error_reply(content.get("id"), "set_ablations",
                                      "cancelled: a newer click superseded this one"))
                    return
                reply, buffers = handle_request(self.explorer, content, should_stop=superseded,
                                                model_lock_held=True)
            send(reply, buffers)
            self.prepare_estimates_in_background()

        return self._start(work, "finwidget-click")

    def sweep(self, answer) -> threading.Thread:
        """Answer a ``sweep`` request in a thread (``answer()`` runs the handler and sends)."""
        explorer = self.explorer

        def work():
            try:
                with self.hold_model():
                    answer(model_lock_held=True)
            finally:
                explorer.sweeping = False

        explorer.sweep_cancel.clear()
        explorer.sweeping = True  # from now on clicks are refused at once, not queued behind it
        return self._start(work, "finwidget-sweep")

    def prepare_estimates_in_background(self) -> None:
        """Compute the shown statement's click-estimate gradients while nothing else wants
        the model (called from a worker after a click); stops for anything that does."""
        session = self.explorer.session
        if getattr(session, "estimates_ready", True) or self.model_wanted:
            return
        lock = self.explorer.model_lock
        if not lock.acquire(blocking=False):
            return
        try:
            session.prepare_estimates(should_stop=lambda: self.model_wanted)
        except RunCancelled:
            pass  # resumed after the next click
        except Exception as err:  # noqa: BLE001 - a background pass must not kill the worker; estimates say why
            session.click_estimates.failure = f"{type(err).__name__}: {err}"
        finally:
            lock.release()
