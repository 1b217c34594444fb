"""Running a policy: tick by tick, read a view, ask the policy, check its answer, apply (or just record) it.

One engine serves both kinds of run.  On an emulated host on the virtual clock, :func:`run` drives the clock
itself, so a simulated day takes seconds and the run returns when it is over.  On real VMs (or an emulated host on
real time) the engine runs in a background thread, one tick every ``tick`` seconds, until its duration ends,
:meth:`LivePolicyRun.stop` or Ctrl-C in :meth:`LivePolicyRun.wait`; it never prints (the kernel's rules:
client/pump.py): decisions are recorded, and ``wait()`` or ``%balloon policy status`` show them.
"""

from __future__ import annotations

import numbers
import logging
import threading
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BalloonError, InvalidValueError, PolicyError
from ..units import format_duration, format_size, parse_duration
from .base import Policy
from .score import SCORE_KEYS, Scorer
from .sources import Source, polling_interval_for, source_for
from .view import View, VMView

log = logging.getLogger("balloonlab")

if TYPE_CHECKING:
    import ipywidgets
    import pandas

#: The most one ``decide`` call may take (wall seconds) before the run stops with a PolicyError.
DECIDE_LIMIT_S = 1.0

ROW_COLUMNS = ("time", "vm", "target", "actual", "rss", "free", "available", "host_used", "host_free",
               "host_swap_used")


@dataclass(frozen=True)
class Decision:
    """One target a policy chose: at ``time`` (tick ``tick``), ``vm`` from ``before`` (its actual) to ``target``
    (after the policy's own speed limit: ``asked`` is what it returned), ``applied`` or only recorded (dry run)."""

    tick: int
    time: float
    vm: str
    before: int
    asked: int
    target: int
    applied: bool

    def __str__(self) -> str:
        limited = f" (asked {format_size(self.asked)}, limited)" if self.asked != self.target else ""
        verb = "->" if self.applied else "would go to"
        return (f"[{format_duration(self.time)}] {self.vm}: {format_size(self.before)} {verb} "
                f"{format_size(self.target)}{limited}")


class PolicyRun:
    """What a run recorded: ``score`` (dict), ``decisions``, ``warnings``, one row per tick and VM
    (:meth:`to_dataframe`), and a plot (:meth:`plot`).  ``error`` is the PolicyError that stopped it, if any."""

    def __init__(self, policy: Policy, tick: float, dry_run: bool, label: str | None = None) -> None:
        self.policy = policy
        self.label = label or policy.label
        self.tick = tick
        self.dry_run = dry_run
        self.decisions: list[Decision] = []
        self.warnings: list[str] = []
        self.error: PolicyError | None = None
        self.interrupted = False
        self._rows: list[tuple] = []
        self._scorer = Scorer(tick)
        self._below: set[str] = set()

    @property
    def score(self) -> dict[str, float]:
        """``host_used_avg``, ``host_used_peak``, ``host_swap_peak`` (bytes), ``overcommit_seconds``,
        ``oom_kills``, ``alloc_stalls``, ``guest_swap_out`` (bytes; summed over the guests), ``target_changes``,
        ``targets_below_use``, ``ticks``, ``seconds``."""
        return self._scorer.score()

    def to_dataframe(self) -> pandas.DataFrame:
        """One row per tick and VM: time (s), vm, target (NaN: never set), actual, rss, free, available (the
        guest's stats), host_used, host_free, host_swap_used (bytes)."""
        import pandas as pd

        return pd.DataFrame(self._rows, columns=list(ROW_COLUMNS))

    def plot(self) -> ipywidgets.Widget:
        """A bqplot widget: the host's memory over time, and each VM's target and actual."""
        from .plot import plot_run

        return plot_run(self)

    def _record(self, view: View) -> None:
        self._scorer.observe(view)
        h = view.host
        for name, vm in view.vms.items():
            self._rows.append((view.time, name, vm.target, vm.actual, vm.rss, vm.free, vm.available,
                               h.used, h.free, h.swap_used))

    def __repr__(self) -> str:
        s = self.score
        state = " (stopped by an error)" if self.error else " (interrupted)" if self.interrupted else ""
        return (f"<PolicyRun {self.label}: {format_duration(s['seconds'])}{state}, host used avg "
                f"{format_size(int(s['host_used_avg']))}, overcommit {s['overcommit_seconds']:g} s, "
                f"OOM kills {s['oom_kills']}, {s['target_changes']} target changes>")

    def _repr_html_(self) -> str:
        from .plot import score_table_html

        return score_table_html([self])


class Engine:
    """One tick of a run: view, decide (guarded), validate, limit, apply or record."""

    def __init__(self, source: Source, policy: Policy, result: PolicyRun, decide_limit: float) -> None:
        self.source = source
        self.policy = policy
        self.result = result
        self.decide_limit = decide_limit
        #: a dry run's targets, as if applied: the same decision on the next tick is not a new one
        self.planned: dict[str, int] = {}

    def step(self, tick: int, now: float) -> None:
        view = self.source.view(tick, now)
        self.result._record(view)
        decisions = self._decide(view)
        for name, asked in decisions.items():
            self._apply(view, view.vms[name], asked)

    def _fail(self, message: str, tick: int, vm: str | None = None) -> PolicyError:
        err = PolicyError(message, tick=tick, vm=vm, run=self.result)
        self.result.error = err
        return err

    def _decide(self, view: View) -> dict[str, int]:
        where = f"at tick {view.tick} ({format_duration(view.time)} into the run)"
        who = f"{self.policy.label}.decide()"
        started = _time.perf_counter()
        try:
            answer = self.policy.decide(view)
        except Exception as exc:
            raise self._fail(f"{who} raised {type(exc).__name__}: {exc} {where}; fix the policy and run again",
                             view.tick) from exc
        took = _time.perf_counter() - started
        if took > self.decide_limit:
            raise self._fail(f"{who} took {took:.2f} s {where}; a tick allows {self.decide_limit:g} s "
                             f"(run(..., decide_limit=...))", view.tick)
        if answer is None:
            return {}
        if not isinstance(answer, Mapping):
            raise self._fail(f"{who} returned a {type(answer).__name__} {where}; return a dict "
                             f"{{vm name: target bytes}} ({{}} changes nothing)", view.tick)
        out: dict[str, int] = {}
        for name, value in answer.items():
            if name not in view.vms:
                known = ", ".join(view.vms)
                raise self._fail(f"{who} set a target for {name!r} {where}, which is not a VM of this run "
                                 f"({known})", view.tick, str(name))
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise self._fail(f"{who} gave {name} the target {value!r} {where}: targets are whole bytes "
                                 f"(int), e.g. 512 * 2**20", view.tick, name)
            if value <= 0:
                raise self._fail(f"{who} gave {name} the target {value} {where}: a target must be positive "
                                 f"bytes", view.tick, name)
            out[name] = int(value)
        return out

    def _apply(self, view: View, vm: VMView, asked: int) -> None:
        target = asked
        limit = self.policy.max_change(vm)
        if limit is not None:
            target = min(max(target, vm.actual - limit), vm.actual + limit)
        current = self.planned.get(vm.name, vm.target if vm.target is not None else vm.ram)
        if target == current:
            return
        result = self.result
        used = vm.used
        if used is not None and target < used:
            if vm.name not in result._below:
                result._below.add(vm.name)
                result.warnings.append(
                    f"tick {view.tick} ({format_duration(view.time)}): {vm.name}'s target "
                    f"{format_size(target)} is below what its guest uses ({format_size(used)})")
            result._scorer.targets_below_use += 1
        else:
            result._below.discard(vm.name)
        applied = not result.dry_run
        if applied:
            self.source.labs[vm.name].set_target(target)
        else:
            self.planned[vm.name] = target
        result._scorer.target_changes += 1
        result.decisions.append(Decision(view.tick, view.time, vm.name, vm.actual, asked, target, applied))


def run(host: Any, policy: Policy, duration: str | float | None = "24h", tick: str | float = "10s", *,
        dry_run: bool = False, decide_limit: float = DECIDE_LIMIT_S, label: str | None = None) -> PolicyRun:
    """Run ``policy`` on ``host`` every ``tick`` for ``duration`` and score it.

    ``host``: an emulated host (``balloonlab.emulate_host``) on the virtual clock is simulated: this call drives
    its clock and returns a finished :class:`PolicyRun`.  Real VMs (a lab, a list of labs, a host on real time)
    are managed in the background: the call returns a :class:`LivePolicyRun` at once (``duration=None``: until
    ``.stop()``).  ``dry_run``: decide and record, never set a target.  Targets go through ``Balloon.set_target``,
    never further from a VM's ``actual`` in one tick than the policy's ``max_change``.

    While a simulated run drives the clock, the labs' own followers (history, panels) are not fed each report: the
    run's dataframe is the record of the day, and they catch up with its end.
    """
    if not isinstance(policy, Policy):
        raise InvalidValueError(f"policy must be a balloonlab.policy.Policy (e.g. MomPolicy()), not "
                                f"{type(policy).__name__}")
    tick_s = parse_duration(tick)
    if not tick_s > 0:
        raise InvalidValueError(f"tick must be a positive duration like '10s', not {tick!r}")
    seconds = None if duration is None else parse_duration(duration)
    source = source_for(host)
    if source.virtual and seconds is None:
        raise InvalidValueError("a simulated run needs a duration, e.g. duration='24h'")
    result_cls = PolicyRun if source.virtual else LivePolicyRun
    result = result_cls(policy, tick_s, dry_run, label)
    policy.reset()
    source.ensure_polling(polling_interval_for(tick_s))
    engine = Engine(source, policy, result, decide_limit)
    if isinstance(result, LivePolicyRun):
        result._start(engine, seconds)
        return result
    assert seconds is not None
    ticks = int(seconds // tick_s)
    try:
        for i in range(ticks):
            engine.step(i, i * tick_s)
            source.advance(tick_s)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        source.finish()  # the host's clock ends where the run does; its labs' followers catch up
    return result


class LivePolicyRun(PolicyRun):
    """A run on real VMs, in a background thread: :meth:`stop`, :meth:`wait` (Ctrl-C stops it), :attr:`running`."""

    def __init__(self, policy: Policy, tick: float, dry_run: bool, label: str | None = None) -> None:
        super().__init__(policy, tick, dry_run, label)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def _start(self, engine: Engine, seconds: float | None) -> None:
        self._thread = threading.Thread(target=self._loop, args=(engine, seconds), name="balloonlab-policy",
                                        daemon=True)
        self._thread.start()

    def _loop(self, engine: Engine, seconds: float | None) -> None:
        start = _time.monotonic()
        i = 0
        try:
            while not self._stop.is_set():
                now = _time.monotonic() - start
                if seconds is not None and now >= seconds:
                    break
                engine.step(i, now)
                i += 1
                self._stop.wait(max(0.0, start + i * self.tick - _time.monotonic()))
        except PolicyError:
            pass  # recorded in self.error by the engine
        except BalloonError as exc:  # a VM went away: stop, keep what was recorded
            self.failure = exc
        except Exception as exc:  # a bug (the policy's or ours): a thread's traceback would land in the running cell
            log.error("policy run %s stopped: %r", self.label, exc, exc_info=exc)
            self.failure = exc

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current tick (targets already set stay set)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None, show: bool = True) -> "LivePolicyRun":
        """Block until the run ends (its duration, :meth:`stop`, or an error), printing each decision as it comes
        when ``show``; Ctrl-C stops the run.  Raises what stopped it, if anything did: the policy's PolicyError,
        a VM that went away (a BalloonError), or any other error the run's thread met."""
        shown = 0
        deadline = None if timeout is None else _time.monotonic() + timeout
        try:
            while self.running and (deadline is None or _time.monotonic() < deadline):
                if self._thread is not None:
                    self._thread.join(0.2)
                shown = self._show(shown) if show else shown
        except KeyboardInterrupt:
            self.interrupted = True
            self.stop()
        if show:
            self._show(shown)
        if self.error is not None:
            raise self.error
        if self.failure is not None:
            raise self.failure
        return self

    def _show(self, shown: int) -> int:
        decisions = self.decisions[shown:]
        for d in decisions:
            print(d)
        return shown + len(decisions)

    def status(self) -> str:
        """One paragraph: running or not, ticks, the last decisions, the error if any."""
        s = self.score
        mode = "dry run" if self.dry_run else "applying"
        state = "running" if self.running else "stopped"
        lines = [f"{self.label} ({mode}, tick {self.tick:g} s): {state} after {int(s['ticks'])} ticks, "
                 f"{len(self.decisions)} decisions"]
        lines += [f"  {d}" for d in self.decisions[-5:]]
        if self.error is not None:
            lines.append(f"  stopped: {self.error}")
        if self.failure is not None:
            lines.append(f"  stopped: {type(self.failure).__name__}: {self.failure}")
        lines += [f"  warning: {w}" for w in self.warnings[-3:]]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.status()


def compare(runs: list[PolicyRun], plot: bool | None = None) -> pandas.DataFrame:
    """The runs' scores side by side (one column per run).  In a notebook (``plot`` None) it also shows each
    run's host memory over time in one plot."""
    import pandas as pd

    if not runs:
        raise InvalidValueError("compare() needs at least one PolicyRun")
    labels = _unique([r.label for r in runs])
    # object columns: counts and bytes stay whole numbers on screen, seconds keep their fraction
    frame = pd.DataFrame({label: [r.score[k] for k in SCORE_KEYS] for label, r in zip(labels, runs)},
                         index=list(SCORE_KEYS), dtype=object)
    if plot is None:
        plot = _in_kernel()
    if plot:
        from IPython.display import display

        from .plot import plot_compare

        display(plot_compare(runs, labels))
    return frame


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None
