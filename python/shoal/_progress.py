"""Progress bars: tqdm, drawn in the parent, fed from the engine's counters.

The engine counts the items of every chunk that finishes (``Engine.stats``,
``crates/shoal-core/src/stats.rs``); one thread per bar reads that count a
few times a second and moves the bar. Nothing runs per task, in the worker
or in the parent, so a bar costs the same for a million tiny tasks as for
ten long ones.

Styles, as MPIRE names them: ``"std"`` (tqdm's text bar), ``"rich"``
(``tqdm.rich``; needs ``rich``), ``"notebook"`` (the ipywidgets bar inside a
Jupyter kernel, the text bar anywhere else) and ``"dashboard"`` (draws
nothing; the bar's state is kept for a dashboard). ``None`` is
:data:`DEFAULT_STYLE`.

Options are tqdm's keyword arguments, over MPIRE's defaults; ``total`` and
``leave`` are the map's own (a warning says so if given), and they are
checked at the call by making a bar that draws nothing, so a typo raises
there and not in the thread.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The style used when a map asks for none (MPIRE's PROGRESS_BAR_DEFAULT_STYLE).
DEFAULT_STYLE = "std"
STYLES = (None, "std", "rich", "notebook", "dashboard")
# MPIRE's defaults; the caller's options override them.
DEFAULT_OPTIONS: dict[str, Any] = {"position": 0, "dynamic_ncols": True, "mininterval": 0.1, "maxinterval": 0.5}
# How often the bar's thread reads the counters, whatever mininterval says:
# often enough that a short map's bar moves, seldom enough to cost nothing.
MIN_POLL = 0.05
MAX_POLL = 0.5

# What a bar that did not run to its end says, after the caller's description.
FAILED = "Exception occurred, terminating ..."
INTERRUPTED = "Keyboard interrupt"
TERMINATED = "Terminated"
# A bar closed where it is, without a word (the caller stopped reading).
LEFT = ""
# What an outcome callback returns while the job runs.
RUNNING = "running"


def check_options(
    progress_bar: bool, options: dict[str, Any] | None, style: str | None, total: int | None
) -> dict[str, Any]:
    """The tqdm options a map's bar is made with, checked as MPIRE checks
    them: ``TypeError`` unless a dict, ``ValueError`` for an unknown style,
    ``NotImplementedError`` for ``position`` with ``"rich"``, a
    ``RuntimeWarning`` for ``total`` or ``leave``, and tqdm's own error
    (``TqdmKeyError``, ``TypeError``) for an option tqdm refuses. Options
    are only tried on tqdm when there is a bar or options to try."""
    if options is not None and not isinstance(options, dict):
        raise TypeError("progress_bar_options should be a dictionary")
    if style not in STYLES:
        raise ValueError(
            f'Invalid progress bar style: {style}. Use either None (=default), "std", "rich", "notebook" or "dashboard"'
        )
    given = options or {}
    if "total" in given:
        warnings.warn(
            "The 'total' keyword argument is overwritten: the total is the number of tasks "
            "(give iterable_len for an input without a length)",
            RuntimeWarning,
            stacklevel=4,
        )
    if "leave" in given:
        warnings.warn(
            "The 'leave' keyword argument is overwritten: the bar is always left", RuntimeWarning, stacklevel=4
        )
    if (style or DEFAULT_STYLE) == "rich" and "position" in given:
        raise NotImplementedError("The 'position' parameter is not supported for rich progress bars")
    merged = {**DEFAULT_OPTIONS, **given, "total": total, "leave": True}
    if progress_bar or options:
        cls = bar_class(style)
        try:
            cls.try_options(merged)
        except (KeyError, TypeError) as exc:  # TqdmKeyError is a KeyError
            raise exc from ValueError(
                "progress_bar_options holds an option tqdm does not take, or one of the wrong type; "
                "see tqdm.tqdm() for the options"
            )
    return merged


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel that can show widgets."""
    import sys

    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - an IPython too odd to ask: not a notebook
        return False
    if shell is None or not hasattr(shell, "kernel"):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def bar_class(style: str | None) -> Any:
    """The tqdm class drawing ``style``."""
    style = style or DEFAULT_STYLE
    if style == "rich":
        return _rich_class()
    if style == "notebook" and _in_notebook():
        return _notebook_class()
    if style == "dashboard":
        return _classes()[1]
    return _classes()[0]


_made: dict[str, Any] = {}
# The lock every bar of shoal's draws under (see StdBar).
_THREAD_LOCK = threading.RLock()


def _classes() -> tuple[Any, Any]:
    """tqdm's text bar and the bar that draws nothing, made on first use so
    that importing shoal does not import tqdm."""
    if "std" not in _made:
        from tqdm import tqdm

        class StdBar(tqdm):
            # No tqdm monitor thread: this bar's own thread refreshes it,
            # and a thread started here would be alive when workers fork.
            monitor_interval = 0
            # Bars are drawn by this process only: a thread lock, not
            # tqdm's default, which makes a multiprocessing lock (and, with
            # spawn or forkserver as the default start method, starts
            # multiprocessing's resource tracker process).
            _lock = _THREAD_LOCK

            @classmethod
            def try_options(cls, options: dict[str, Any]) -> None:
                cls(**{**options, "file": io.StringIO()}).close()

        class DashboardBar(StdBar):
            """Keeps the counts (for a dashboard) and draws nothing."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs["file"] = io.StringIO()
                super().__init__(*args, **kwargs)

            def display(self, *args: Any, **kwargs: Any) -> None:
                return None

        _made["std"], _made["dashboard"] = StdBar, DashboardBar
    return _made["std"], _made["dashboard"]


def _rich_class() -> Any:
    if "rich" not in _made:
        try:
            from tqdm import TqdmExperimentalWarning
            from tqdm.rich import tqdm_rich
        except ImportError as exc:
            raise ImportError("progress_bar_style='rich' needs rich: pip install rich") from exc

        class RichBar(tqdm_rich):
            monitor_interval = 0
            _lock = _THREAD_LOCK  # see StdBar

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                # rich refreshes on a thread of its own unless told not to;
                # this bar's thread refreshes it instead (display below).
                options = dict(kwargs.pop("options", None) or {})
                options.setdefault("auto_refresh", False)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", TqdmExperimentalWarning)
                    super().__init__(*args, options=options, **kwargs)

            def display(self, *args: Any, **kwargs: Any) -> Any:
                shown = super().display(*args, **kwargs)
                prog = getattr(self, "_prog", None)
                if prog is not None:
                    prog.refresh()
                return shown

            @classmethod
            def try_options(cls, options: dict[str, Any]) -> None:
                # Disabled: rich would start drawing on the terminal.
                cls(**{**options, "disable": True}).close()

        _made["rich"] = RichBar
    return _made["rich"]


def _notebook_class() -> Any:
    if "notebook" not in _made:
        from tqdm.notebook import tqdm_notebook

        class NotebookBar(tqdm_notebook):
            monitor_interval = 0
            _lock = _THREAD_LOCK  # see StdBar

            @classmethod
            def try_options(cls, options: dict[str, Any]) -> None:
                cls(**{**options, "display": False}).close()

        _made["notebook"] = NotebookBar
    return _made["notebook"]


class Progress:
    """One map's bar and the thread that moves it.

    ``count()`` says how many of the map's tasks have finished and
    ``total()`` how many there are (``None`` while unknown); both are read
    on the bar's thread, from the engine's counters. ``outcome()``, if
    given, says when the job has ended without its caller saying so (an
    ``imap`` or ``map_async`` nobody waits on): :data:`RUNNING` until then,
    then how to :meth:`finish`. The bar is made and
    its thread started by :meth:`start`, after the workers have started,
    so no thread of the bar's is alive when they fork. :meth:`finish` says
    how the map ended and closes the bar; it is safe to call more than once
    and from any thread.
    """

    def __init__(self, options: dict[str, Any], style: str | None) -> None:
        self._options = options
        self._style = style
        self._bar: Any = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._sources: tuple[Any, Any, Any] | None = None
        mininterval = float(options.get("mininterval") or 0.1)
        self._poll = min(max(mininterval, MIN_POLL), MAX_POLL)

    def start(
        self,
        count: Callable[[], int | None],
        total: Callable[[], int | None],
        outcome: Callable[[], str | None] | None = None,
    ) -> None:
        """Draw the bar and start following ``count``."""
        with self._lock:
            if self._closed:
                return
            self._bar = bar_class(self._style)(**self._options)
        self._sources = (count, total, outcome)
        thread = threading.Thread(target=self._follow, args=(count, total, outcome), name="shoal-progress", daemon=True)
        thread.start()
        # Only a started thread is joined: Ctrl-C may land between the two.
        self._thread = thread

    def _follow(
        self,
        count: Callable[[], int | None],
        total: Callable[[], int | None],
        outcome: Callable[[], str | None] | None,
    ) -> None:
        while not self._stop.wait(self._poll):
            try:
                n, t = count(), total()
                how = RUNNING if outcome is None else outcome()
            except Exception:  # noqa: BLE001 - the engine is gone: the map is ending, finish() says how
                return
            if how != RUNNING:
                # Ended: a success shows its total, anything else its count.
                self.finish(how, None if how is None else n, t)
                return
            with self._lock:
                if self._closed:
                    return
                self._move(n, t)

    def _move(self, n: int | None, total: int | None) -> None:
        bar = self._bar
        if total is not None and bar.total != total:
            _set_total(bar, total)
        if n is not None and n > bar.n:
            bar.update(n - bar.n)

    def end(self, how: str) -> None:
        """Close the bar as its job has ended, if its outcome callback says
        how, else as ``how`` says (the pool is terminating)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        n = total = None
        if self._sources is not None:
            count, known_total, outcome = self._sources
            try:
                n, total = count(), known_total()
                if outcome is not None and outcome() != RUNNING:
                    how = outcome()
            except Exception:  # noqa: BLE001 - the engine is gone: as how says
                pass
        self.finish(how, None if how is None else n, total)

    def finish(self, how: str | None = None, n: int | None = None, total: int | None = None) -> None:
        """Close the bar. ``how``: ``None`` for a map that ran to its end
        (the bar shows ``n`` of ``total``, or full), else why it stopped
        (:data:`FAILED`, :data:`INTERRUPTED`, :data:`TERMINATED`), shown
        as its description, or :data:`LEFT` (closed at ``n``, no word)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            bar = self._bar
            if bar is None:
                if how == LEFT:
                    return
                # Ended before it was drawn (Ctrl-C as workers started, a
                # failure at the first chunk): drawn now, to say how.
                bar = self._bar = bar_class(self._style)(**self._options)
            try:
                if how is None:
                    if total is not None and bar.total != total:
                        _set_total(bar, total)
                    end = n if n is not None else total if total is not None else bar.total
                    if end is not None:
                        self._move(end, None)
                else:
                    if n is not None:
                        self._move(n, total)
                    if how:
                        desc = self._options.get("desc")
                        bar.set_description_str(f"{desc}: {how}" if desc else how, refresh=False)
                bar.refresh()
            finally:
                bar.close()


def _set_total(bar: Any, total: int) -> None:
    """Give ``bar`` its total, once known, where each style shows it."""
    bar.total = total
    prog = getattr(bar, "_prog", None)  # rich's own task keeps a total
    if prog is not None:
        prog.update(bar._task_id, total=total)
    container = getattr(bar, "container", None)  # the notebook widget's bar
    if container is not None:
        container.children[1].max = total
    bar.refresh()


def finished_items(job: dict[str, Any] | None) -> int | None:
    """Tasks of a job (``Engine.job_stats``) that ran, raised or not."""
    if job is None:
        return None
    tally = job["tally"]
    n: int = tally["done"][1] + tally["failed"][1]
    return n


def job_counter(engine: Any, job: int) -> Callable[[], int | None]:
    """``count`` for :meth:`Progress.start`: the job's finished tasks."""
    return lambda: finished_items(engine.job_stats(job))
