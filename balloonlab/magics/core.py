"""``BalloonMagics``: the ``%balloon`` line magic and the ``%%qmp`` cell magic, and the state they share.

The state is per shell, on the Magics instance, never in module globals: the current lab, whether the magics
made it (then they also close it), and the running watches.  Decisions, also written in ``%balloon?``:

* ``%balloon emulate|connect|launch`` return the new lab (``lab = %balloon emulate``) and make it current.  The
  previous current lab is closed if the magics made it (re-running a cell must not leak emulators or QEMUs);
  a lab adopted with ``%balloon use NAME`` was made in Python and is never closed by the magics.
* ``%unload_ext balloonlab`` stops every watch and closes the panels and labs the magics made.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.utils.process import arg_split

from ..errors import BalloonError, EmulatorOptionError, InvalidValueError
from .qmp_text import QMPTextError, parse_qmp_text
from .watch import StatsWatch
from . import subcommands
from .qmp import run_commands

if TYPE_CHECKING:
    from ..client.balloon import Balloon
    from ..client.backend import HostLike
    from ..policy import LivePolicyRun
    from ..widgets import BalloonPanel
    from ..widgets.fleet import FleetPanel

__all__ = ["BalloonMagics"]

NO_LAB_HINT = "no lab yet (start one with %balloon emulate, %balloon connect PATH or %balloon launch)"


def strip_comment(line: str) -> str:
    """``%balloon advance 2s  # let the guest boot``: drop a ``#`` comment (one that follows a space, outside
    quotes), so notebooks can annotate their magics; ``connect /tmp/a#b`` keeps its ``#``."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


@magics_class
class BalloonMagics(Magics):
    """``%balloon`` and ``%%qmp``."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.lab: Balloon | None = None  #: the current lab or None
        self._owned: list[Balloon] = []  #: labs these magics started (closed on replace and on unload)
        self.watches: list[StatsWatch] = []
        self.panels: list[BalloonPanel] = []  #: made by %balloon panel (closed on unload: they run a thread)
        self.host: HostLike | None = None  #: the current host of VMs or None
        self._owned_hosts: list[HostLike] = []  #: hosts these magics started (%balloon host)
        self.fleet_panels: list[FleetPanel] = []  #: made by %balloon host / fleet
        self.policy_run: LivePolicyRun | None = None  #: the last run %balloon policy started (stopped on unload)

    @property
    def user_ns(self) -> dict[str, Any]:
        """The notebook's namespace (the shell is always set once the extension is loaded)."""
        assert self.shell is not None
        return self.shell.user_ns

    # the current lab ----------------------------------------------------------------------------------------------
    def require_host(self) -> HostLike:
        if self.host is None or self.host.closed:
            raise UsageError("no host yet: start one with %balloon host --vms 4 --memory 3G --vm-memory 1G, or "
                             "make one in Python and %balloon use it")
        return self.host

    def start_host(self, factory: Callable[[], HostLike]) -> HostLike:
        """Start a host with ``factory``; it replaces the current host (closed if ours), and its first VM
        becomes the current lab.  Errors leave without a prefix: :meth:`balloon` adds the one line's
        ``%balloon SUBCOMMAND:``."""
        try:
            host = factory()
        except (ValueError, TypeError, EmulatorOptionError) as exc:
            raise UsageError(str(exc)) from None
        self.adopt_host(host)
        self._owned_hosts.append(host)
        return host

    def adopt_host(self, host: HostLike) -> None:
        """Make ``host`` current (and its first VM the current lab); a previous host of ours is closed."""
        previous, self.host = self.host, host
        if previous is not None and previous is not host:
            self.close_host(previous, only_if_owned=True)
        if host.vms:
            self.adopt_lab(host.vms[0])

    def close_host(self, host: HostLike, only_if_owned: bool = False) -> None:
        """Close the fleet panels on ``host``; close the host too (unless ``only_if_owned`` and it is not ours)."""
        for panel in [p for p in self.fleet_panels if p.host is host]:
            panel.close()
            self.fleet_panels.remove(panel)
        owned = any(host is o for o in self._owned_hosts)
        if only_if_owned and not owned:
            return
        self._owned_hosts = [o for o in self._owned_hosts if o is not host]
        if self.lab is not None and any(self.lab is vm for vm in host.vms):
            self.lab = None
        if self.host is host:
            self.host = None
        host.close()

    def require_lab(self) -> Balloon:
        if self.lab is None:
            raise UsageError(NO_LAB_HINT)
        return self.lab

    def start_lab(self, factory: Callable[[], Balloon]) -> Balloon:
        """Start a lab with ``factory``; on success it replaces the current one (closed if ours)."""
        try:
            lab = factory()
        except (ValueError, TypeError, EmulatorOptionError) as exc:
            # a value only the backend can judge (an unknown guest model or QEMU version)
            raise UsageError(str(exc)) from None
        previous = self.lab
        self.lab = lab
        self._owned.append(lab)
        if previous is not None and any(previous is o for o in self._owned):
            self.close_lab(previous, make_current_none=False)
        return lab

    def adopt_lab(self, lab: Balloon) -> None:
        """Make a lab made elsewhere current, without taking ownership (the magics never close it)."""
        previous = self.lab
        self.lab = lab
        if previous is not None and previous is not lab and any(previous is o for o in self._owned):
            self.close_lab(previous, make_current_none=False)

    def close_lab(self, lab: Balloon, make_current_none: bool = True) -> None:
        """Stop the watches on ``lab``, close it, and freeze its panels: they stay on screen with the lab's last
        state and say it is closed (a notebook run with Run All and saved still shows them)."""
        for watch in [w for w in self.watches if w.lab is lab]:
            watch.stop()
            self.watches.remove(watch)
        self._owned = [o for o in self._owned if o is not lab]
        if make_current_none and self.lab is lab:
            self.lab = None
        # Freeze first (it stops following), so the panel says why the lab closed, not just that it did.
        for panel in [p for p in self.panels if p.lab is lab]:
            panel.freeze("the lab was closed (%balloon close)" if make_current_none else
                         "the lab was closed: %balloon started another one")
        self.panels = [p for p in self.panels if p.lab is not lab]
        lab.close()

    # watches ------------------------------------------------------------------------------------------------------
    def current_cell_id(self) -> str | None:
        """The notebook cell being run (JupyterLab and Notebook 7 send ``cellId`` in the execute request's
        metadata; ipykernel keeps that request as the kernel's parent), or None outside a kernel or without it.
        ``shell.parent_header`` is only the request's header in ipykernel 7, without the metadata."""
        kernel = getattr(self.shell, "kernel", None)
        try:
            parent = kernel.get_parent() if kernel is not None else None
        except Exception:  # an unusual kernel: no cell id, so the watch behaves as outside a kernel
            return None
        cell_id = ((parent or {}).get("metadata") or {}).get("cellId")
        return cell_id if isinstance(cell_id, str) and cell_id else None

    def start_watch(self, lab: Balloon) -> StatsWatch:
        """Start a watch in this cell's output.  Several run at once (from different cells); one started by the
        same cell as an earlier active one replaces it (re-running the cell: the old output is gone)."""
        cell_id = self.current_cell_id()
        if cell_id is not None:
            for old in [w for w in self.watches if w.cell_id == cell_id and w.active]:
                old.stop()
        watch = StatsWatch(lab, self.shell, cell_id=cell_id).start()
        self.watches = [w for w in self.watches if w.active]
        if watch.active:
            self.watches.append(watch)
        return watch

    def stop_watches(self) -> int:
        watches, self.watches = self.watches, []
        running = [w for w in watches if w.active]
        for watch in running:
            watch.stop()
        return len(running)

    # panels -------------------------------------------------------------------------------------------------------
    def close_panels(self, lab: Balloon | None = None) -> int:
        """Close the panels ``%balloon panel`` made (of ``lab`` only, if given); returns how many were open."""
        keep: list[BalloonPanel] = []
        close: list[BalloonPanel] = []
        for panel in self.panels:
            (close if lab is None or panel.lab is lab else keep).append(panel)
        self.panels = [p for p in keep if not p.closed]
        open_ones = [p for p in close if not p.closed]
        for panel in open_ones:
            panel.close()
        return len(open_ones)

    def shutdown(self) -> None:
        """What ``%unload_ext`` does: stop every watch and panel, close every lab these magics made."""
        self.stop_watches()
        self.close_panels()
        if self.policy_run is not None:  # before the VMs it manages go away
            self.policy_run.stop()
        for panel in self.fleet_panels:
            panel.close()
        self.fleet_panels = []
        for host in list(self._owned_hosts):
            try:
                self.close_host(host)
            except Exception as exc:  # unloading must go on
                print(f"balloonlab: closing a host failed: {exc}", file=sys.stderr)
        self.host = None
        for lab in list(self._owned):
            try:
                self.close_lab(lab)
            except Exception as exc:  # unloading must go on; say what could not be closed
                print(f"balloonlab: closing a lab failed: {exc}", file=sys.stderr)
        self.lab = None

    # %balloon -----------------------------------------------------------------------------------------------------
    @line_magic
    def balloon(self, line: str) -> Any:
        line = strip_comment(line)
        words = arg_split(line, strict=False)
        if not words or words[0] in ("-h", "--help", "help"):
            if len(words) > 1:
                print(subcommands.find(words[1]).help)
            else:
                print(subcommands.overview())
            return None
        sub = subcommands.find(words[0])
        if "-h" in words[1:] or "--help" in words[1:]:
            print(sub.help)
            return None
        rest = line.strip()[len(words[0]):]
        # One form for every error: "%balloon SUBCOMMAND: what is wrong (what to do)", argparse's included.
        try:
            args = sub.parser.parse_argstring(rest)
        except UsageError as exc:
            raise UsageError(f"%balloon {sub.name}: {exc} (%balloon {sub.name} -h shows its usage)") from None
        try:
            return sub.handler(self, args)
        except (UsageError, InvalidValueError, EmulatorOptionError) as exc:  # what was typed: a usage error
            raise UsageError(f"%balloon {sub.name}: {exc}") from None
        except BalloonError as exc:  # what happened (QEMU gone, QEMU refused): keeps its class, same one line
            exc.where = f"%balloon {sub.name}"
            raise

    balloon.__doc__ = subcommands.overview()

    # %%qmp --------------------------------------------------------------------------------------------------------
    @no_var_expand
    @magic_arguments(name="%qmp")  # shown as %%qmp in the usage line
    @argument("-v", "--verbose", action="store_true",
              help="write a transcript: '-> request' and '<- reply' lines, as in QEMU's protocol spec")
    @argument("-o", "--output", metavar="NAME", default=None,
              help="also store the list of replies (dicts, as on the wire) in the variable NAME")
    @cell_magic
    def qmp(self, line: str, cell: str) -> None:
        """Send QMP commands to the current lab; show each reply as QEMU sends it, and the events meanwhile.

        The cell holds one or more commands, in any mix of:

          - JSON objects as in QEMU's docs, over several lines if you like;
          - qmp-shell's form: qom-get path=/machine/peripheral/balloon0 property=guest-stats
            (values are JSON where they parse as JSON, strings otherwise; dotted keys nest: a.b=1);
          - transcripts: '-> ' and '<- ' prefixes are stripped; QEMU's replies and events in the cell (objects
            with return/error/event, or '<- ' lines) are skipped, so a doc example pasted verbatim runs.

        Lines starting with # are comments. Every command is checked before the first is sent: a typo anywhere
        sends nothing. A QMP error reply is shown, not raised, and the next command still runs.

        The commands go over the lab's own QMP connection. Real QEMU serves one client per QMP socket (a second
        one waits, ungreeted, until the first leaves); balloonlab's emulator serves several at once, so qmp-shell
        can attach beside a lab, unless it runs with --single-client (emulate(single_client=True)).
        """
        if {"-h", "--help"} & set(arg_split(line, strict=False)):
            print(self.qmp.__doc__)
            return None
        args = parse_argstring(self.qmp, line)
        try:
            commands = parse_qmp_text(cell, first_line=2)
        except QMPTextError as exc:
            raise UsageError(f"%%qmp: {exc} (nothing was sent)") from None
        if not commands:
            raise UsageError("%%qmp: no command in the cell; write e.g. {\"execute\": \"query-balloon\"} or "
                             "query-balloon")
        if args.output is not None and not args.output.isidentifier():
            raise UsageError(f"%%qmp --output: {args.output!r} is not a variable name")
        try:
            lab = self.require_lab()
        except UsageError as exc:
            raise UsageError(f"%%qmp: {exc}") from None
        try:
            replies = run_commands(lab, commands, verbose=args.verbose)
        except BalloonError as exc:  # QEMU gone: the class stays, shown in the magic's one-line form
            exc.where = "%%qmp"
            raise
        if args.output is not None:
            self.user_ns[args.output] = replies
        return None
