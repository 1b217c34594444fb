"""The subcommands of ``%balloon``: one IPython ``magic_arguments`` parser and one handler each.

Why one parser per subcommand (and a dispatch on the first word) rather than argparse subparsers: IPython's
``magic_arguments`` turns each parser into a usage block, and ``%balloon?`` then shows the usage and options of
every subcommand in one place; ``%balloon emulate -h`` shows one.  Every handler validates its input before it
touches the device (a bad size or duration raises :class:`UsageError`, one line, nothing sent) and returns a value
instead of printing when there is one to return (``s = %balloon stats``, ``lab = %balloon emulate``).
"""

from __future__ import annotations

import argparse
import difflib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from ..errors import VirtualClockRequiredError
from ..units import format_duration, format_size, parse_duration, parse_guest_size, parse_interval
from .info import LabInfo
from .watch import has_live_display

if TYPE_CHECKING:  # pragma: no cover
    from ..client.backend import HostLike
    from ..widgets.fleet import FleetPanel
    from .core import BalloonMagics

@dataclass(frozen=True)
class Subcommand:
    """A ``%balloon`` subcommand: its name, its parser-carrying function, and what it does."""

    name: str
    handler: Callable[["BalloonMagics", argparse.Namespace], Any]

    @property
    def parser(self) -> Any:
        return self.handler.parser  # type: ignore[attr-defined]

    @property
    def help(self) -> str:
        return self.parser.format_help()

    @property
    def summary(self) -> str:
        doc = (self.handler.__wrapped_doc__ or "").strip()  # type: ignore[attr-defined]
        return doc.splitlines()[0] if doc else ""


SUBCOMMANDS: dict[str, Subcommand] = {}


def subcommand(name: str) -> Callable:
    """Register a handler (already decorated with ``magic_arguments``) as ``%balloon NAME``."""

    def register(handler: Callable) -> Callable:
        SUBCOMMANDS[name] = Subcommand(name, handler)
        return handler

    return register


def _keep_doc(func: Callable) -> Callable:
    # magic_arguments replaces __doc__ by the formatted help; the first line of the original is the summary.
    func.__wrapped_doc__ = func.__doc__  # type: ignore[attr-defined]
    return func


def find(name: str) -> Subcommand:
    """The subcommand called ``name``, or a UsageError that lists them all (and guesses a typo)."""
    try:
        return SUBCOMMANDS[name]
    except KeyError:
        pass
    guess = difflib.get_close_matches(name, SUBCOMMANDS, n=1)
    hint = f"did you mean '{guess[0]}'? " if guess else ""
    raise UsageError(
        f"%balloon: unknown subcommand '{name}'; {hint}choose one of: {', '.join(SUBCOMMANDS)} "
        "(%balloon? shows the usage of each)")


# ---------------------------------------------------------------------------------------------------------------
# Values are checked by units.py (parse_guest_size, parse_interval, parse_duration) before anything is sent, in the
# same words as the Python API; core.BalloonMagics.balloon puts "%balloon SUBCOMMAND: " in front of them.


class PollingInterval(int):
    """What ``n = %balloon poll`` returns: the interval as an ``int`` that IPython shows in words."""

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(interval_words(int(self)))


# ---------------------------------------------------------------------------------------------------------------
# starting and choosing a lab


@subcommand("emulate")
@magic_arguments(name="balloon emulate")
@argument("--guest", default="linux", help="guest model: linux, nodriver, buggy, partial, windows (default linux)")
@argument("--memory", default="512M", help="guest RAM, e.g. 512M, 1G, or bytes (default 512M)")
@argument("--clock", default="real", choices=("real", "virtual"), metavar="CLOCK",
          help="real (default): the device polls in real time; virtual: time moves only with %%balloon advance")
@argument("--qemu-version", default="10.0", help="QEMU version to behave like: 7.2, 9.2 or 10.0 (default 10.0)")
@argument("--id", default=None,
          help="device id: the balloon goes to /machine/peripheral/ID (default: no id, at "
               "/machine/peripheral-anon/device[1] as in QEMU's stats doc)")
@argument("--paused", action="store_true", help="start the VM paused, as qemu-system -S")
@argument("--guest-kernel", default=None, help="linux guest's kernel: 6.1 or 6.12 (default: as seen with that QEMU)")
@_keep_doc
def _emulate(magics: "BalloonMagics", args: argparse.Namespace) -> Any:
    """Start an emulated QEMU (in this process, real QMP on a unix socket) and make it the current lab."""
    parse_guest_size(args.memory, "memory")
    from ..client.balloon import emulate

    lab = magics.start_lab(
        lambda: emulate(guest=args.guest, memory=args.memory, clock=args.clock,
                        qemu_version=args.qemu_version, id=args.id, paused=args.paused,
                        guest_kernel=args.guest_kernel))
    return lab


@subcommand("connect")
@magic_arguments(name="balloon connect")
@argument("path", help="the QMP unix socket of a running QEMU (-qmp unix:PATH,server=on,wait=off), or a libvirt "
                       "URI (qemu:///system, qemu+ssh://HOST/system)")
@argument("domain", nargs="?", default=None, help="with a libvirt URI: the domain (VM) name")
@argument("--shared", action="store_true",
          help="open the socket for each call and release it (exclusive=False): for sockets a manager such as "
               "Proxmox uses too; no events, the watch polls")
@_keep_doc
def _connect(magics: "BalloonMagics", args: argparse.Namespace) -> Any:
    """Connect to a running QEMU by its QMP socket, or to a libvirt domain, and make it current."""
    from ..client.balloon import connect

    if "://" in args.path:
        if args.domain is None:
            raise UsageError(f"name the VM: %balloon connect {args.path} DOMAIN")
        return magics.start_lab(lambda: connect(args.path, domain=args.domain))
    if args.domain is not None:
        raise UsageError(f"{args.domain!r}: a domain goes with a libvirt URI (qemu:///system), "
                         "not with a QMP socket")
    path = os.path.expanduser(args.path)
    if not os.path.exists(path):
        raise UsageError(f"no such socket: {path} (start QEMU with -qmp unix:{path},server=on,wait=off)")
    return magics.start_lab(lambda: connect(path, exclusive=not args.shared))


@subcommand("launch")
@magic_arguments(name="balloon launch")
@argument("--memory", default="512M", help="guest RAM, e.g. 512M, 1G, or bytes (default 512M)")
@argument("--id", default="balloon0", help="device id of the balloon (default balloon0)")
@argument("--paused", action="store_true", help="start the VM paused, as qemu-system -S")
@argument("--no-guest", action="store_true", help="boot no kernel at all: QEMU answers QMP, nobody reports")
@_keep_doc
def _launch(magics: "BalloonMagics", args: argparse.Namespace) -> Any:
    """Boot a live qemu-system-x86_64 (TCG) with balloonlab's tiny Linux guest and make it current."""
    parse_guest_size(args.memory, "memory")
    from ..client.balloon import launch

    return magics.start_lab(
        lambda: launch(memory=args.memory, balloon_id=args.id, paused=args.paused, guest=not args.no_guest))


@subcommand("use")
@magic_arguments(name="balloon use")
@argument("name", help="a VM of the current host (vm2), or a variable holding a lab or a host made in Python")
@_keep_doc
def _use(magics: "BalloonMagics", args: argparse.Namespace) -> Any:
    """Make a host's VM, or a lab or host made in Python, current (%balloon close closes it; replacing it does not)."""
    from ..client.balloon import Balloon
    from ..client.fleet import Fleet
    from ..client.host import Host

    host = magics.host if magics.host is not None and not magics.host.closed else None
    if host is not None and args.name in host:
        magics.adopt_lab(host[args.name])
        print(f"using {args.name} of the current host: {_describe(host[args.name])}")
        return None
    value = magics.user_ns.get(args.name)
    if isinstance(value, Balloon):
        magics.adopt_lab(value)
        print(f"using {args.name}: {_describe(value)} (%balloon close closes it; %balloon emulate/connect/launch "
              "replace it without closing it)")
        return None
    if isinstance(value, (Host, Fleet)):
        magics.adopt_host(value)
        print(f"using the host {args.name}: {len(value.vms)} VMs ({', '.join(value.names)}); %balloon fleet shows it")
        return None
    if value is not None:
        raise UsageError(f"{args.name} is a {type(value).__name__}, not a balloonlab lab or host")
    known = (host.names if host is not None else []) + [
        k for k, v in magics.user_ns.items() if not k.startswith("_") and isinstance(v, (Balloon, Host, Fleet))]
    guess = difflib.get_close_matches(args.name, known, n=1)
    hint = f"; did you mean '{guess[0]}'?" if guess else ""
    where = f"the current host's VMs are {', '.join(host.names)}" if host is not None else "no host is current"
    raise UsageError(f"no variable named {args.name!r}, and {where}{hint}")


@subcommand("host")
@magic_arguments(name="balloon host")
@argument("--vms", type=int, default=4, help="how many VMs (default 4)")
@argument("--memory", default="3G", help="the host's RAM (default 3G)")
@argument("--vm-memory", default="1G", help="each VM's RAM (default 1G)")
@argument("--workloads", default=None,
          help="what the guests do: idle, steady, diurnal, bursty, leak, batch, or mixed (default: idle)")
@argument("--free-page-reporting", action="store_true", help="the devices report free pages back to the host")
@argument("--deflate-on-oom", action="store_true", help="the guests deflate the balloon instead of OOM-killing")
@argument("--clock", default="virtual", choices=("real", "virtual"), metavar="CLOCK",
          help="virtual (default): time moves only with %%balloon advance; real: as on the wall")
@argument("--seed", type=int, default=0, help="seed of the workloads (default 0)")
@_keep_doc
def _host(magics: "BalloonMagics", args: argparse.Namespace) -> Any:
    """Start an emulated host of VMs sharing its memory, make it current (vm0 the current lab), show its fleet."""
    parse_guest_size(args.memory, "--memory")
    parse_guest_size(args.vm_memory, "--vm-memory")
    if args.vms < 1:
        raise UsageError(f"--vms: at least one VM, got {args.vms}")
    from ..client.host import emulate_host

    host = magics.start_host(lambda: emulate_host(
        memory=args.memory, vms=args.vms, vm_memory=args.vm_memory, clock=args.clock, workloads=args.workloads,
        free_page_reporting=args.free_page_reporting, deflate_on_oom=args.deflate_on_oom, seed=args.seed))
    return _fleet_panel(magics, host)


@subcommand("fleet")
@magic_arguments(name="balloon fleet")
@argument("uris", nargs="*", metavar="URI",
          help="libvirt URIs (qemu:///system, qemu+ssh://HOST/system): their running VMs become the current host")
@_keep_doc
def _fleet(magics: "BalloonMagics", args: argparse.Namespace) -> Any:
    """The fleet panel of the current host, or of the VMs on these libvirt hosts (made current, vm list first)."""
    if args.uris:
        from ..client.fleet import fleet as open_fleet

        return _fleet_panel(magics, magics.start_host(lambda: open_fleet(args.uris)))
    return _fleet_panel(magics, magics.require_host())


def _fleet_panel(magics: "BalloonMagics", host: "HostLike") -> "FleetPanel":
    try:
        from ..widgets.fleet import FleetPanel
    except ImportError as exc:
        raise UsageError(f"the fleet panel needs ipywidgets and bqplot ({exc}); pip install balloonlab") from None
    for old in [p for p in magics.fleet_panels if p.host is host]:  # a re-run cell replaces its panel
        old.close()
        magics.fleet_panels.remove(old)
    panel = FleetPanel(host)
    magics.fleet_panels.append(panel)
    return panel


@subcommand("close")
@magic_arguments(name="balloon close")
@_keep_doc
def _close(magics: "BalloonMagics", args: argparse.Namespace) -> None:
    """Close the current lab (stops its watches, and what it started: the emulator or the QEMU process)."""
    if magics.lab is None:
        print("no lab is open")
        return
    what = _describe(magics.lab)
    magics.close_lab(magics.lab)
    print(f"closed {what}")


# ---------------------------------------------------------------------------------------------------------------
# reading and steering the device


@subcommand("poll")
@magic_arguments(name="balloon poll")
@argument("interval", nargs="?", default=None,
          help="seconds between stats requests (2, 30s, 1m); 0 turns polling off; none: show the current one")
@_keep_doc
def _poll(magics: "BalloonMagics", args: argparse.Namespace) -> PollingInterval | None:
    """Show (n = %balloon poll: an int) or set guest-stats-polling-interval (how often QEMU asks for stats)."""
    if args.interval is None:
        return PollingInterval(magics.require_lab().polling_interval)
    seconds = parse_interval(args.interval)
    lab = magics.require_lab()
    lab.polling_interval = seconds
    print(interval_words(seconds))
    return None


@subcommand("stats")
@magic_arguments(name="balloon stats")
@_keep_doc
def _stats(magics: "BalloonMagics", args: argparse.Namespace) -> Any:
    """The guest's latest stats (GuestStats: s = %balloon stats; s["free-memory"])."""
    return magics.require_lab().stats()


@subcommand("watch")
@magic_arguments(name="balloon watch")
@argument("--stop", action="store_true", help="stop every running watch")
@_keep_doc
def _watch(magics: "BalloonMagics", args: argparse.Namespace) -> None:
    """Show the stats in this cell's output and keep them updated on every new report (the cell returns at once)."""
    if args.stop:
        n = magics.stop_watches()
        print(f"stopped {n} watch{'es' if n != 1 else ''}" if n else
              "no watch is running (outside Jupyter a watch shows one snapshot and does not run on)")
        return
    magics.start_watch(magics.require_lab())


@subcommand("panel")
@magic_arguments(name="balloon panel")
@_keep_doc
def _panel(magics: "BalloonMagics", args: argparse.Namespace) -> Any:
    """The interactive panel (sliders for interval and target, live stats, plot, events, trace) for the lab."""
    lab = magics.require_lab()
    if not has_live_display(magics.shell):
        raise UsageError("the panel is a widget and needs Jupyter (JupyterLab, Notebook, VS Code); here "
                         "%balloon stats, %balloon info and %balloon watch show the same numbers as text")
    try:
        from ..widgets import BalloonPanel
    except ImportError as exc:
        raise UsageError(f"the panel needs ipywidgets and bqplot: {exc} (pip install balloonlab)") from None
    # Re-running the cell replaces the panel: the old one (its thread, its subscription) is closed, not piled up.
    magics.close_panels(lab)
    panel = BalloonPanel(lab)
    magics.panels.append(panel)
    return panel


@subcommand("target")
@magic_arguments(name="balloon target")
@argument("size", help="the guest's new logical RAM size: 256M, 1.5G or bytes (268435456; a bare number is bytes)")
@_keep_doc
def _target(magics: "BalloonMagics", args: argparse.Namespace) -> None:
    """Ask the guest to balloon to SIZE (QMP balloon); the guest driver moves `actual`, not QEMU."""
    size = parse_guest_size(args.size, "target")
    lab = magics.require_lab()
    lab.set_target(size)
    ram = lab.ram_size
    clamp = f"; above RAM, so QEMU asks for the full {format_size(ram)}" if ram and size > ram else ""
    print(f"target {format_size(size)} sent (actual now {format_size(lab.actual)}{clamp})")


@subcommand("info")
@magic_arguments(name="balloon info")
@_keep_doc
def _info(magics: "BalloonMagics", args: argparse.Namespace) -> LabInfo:
    """Backend, socket, device path, actual and RAM, polling interval, and the doctor's verdict."""
    return LabInfo.of(magics.require_lab())


@subcommand("advance")
@magic_arguments(name="balloon advance")
@argument("duration", help="how much virtual time to run: 30s, 1.5m, 24h, 1h30m")
@_keep_doc
def _advance(magics: "BalloonMagics", args: argparse.Namespace) -> None:
    """Move an emulated lab's virtual clock forward (every timer due meanwhile fires, in order)."""
    seconds = parse_duration(args.duration)
    lab = magics.require_lab()
    try:
        lab.advance(seconds)  # an emulated lab, or a `balloonlab emulate --clock virtual` socket
    except VirtualClockRequiredError:
        if lab.backend == "emulated":
            raise UsageError("this emulated lab runs on the real clock (start one with "
                             "%balloon emulate --clock virtual)") from None
        socket = "run `balloonlab emulate --clock virtual` and connect to it, or " if lab.backend == "connected" else ""
        raise UsageError(f"this lab is {lab.backend}; only an emulated lab has a virtual clock ({socket}use "
                         "%balloon emulate --clock virtual)") from None
    print(f"advanced {format_duration(seconds)}")


# ---------------------------------------------------------------------------------------------------------------
# recordings


@subcommand("record")
@magic_arguments(name="balloon record")
@argument("file", nargs="?", default=None,
          help="where to record (session.blab, or session.blab.gz compressed); none: show what records")
@argument("--stop", action="store_true", help="stop recording the current lab")
@_keep_doc
def _record(magics: "BalloonMagics", args: argparse.Namespace) -> None:
    """Record the current lab (every QMP exchange, event and report) to FILE until --stop or %balloon close."""
    if args.stop and args.file:
        raise UsageError("give a FILE to start recording, or --stop, not both")
    lab = magics.require_lab()
    if args.stop:
        recorders = lab.recorders
        for rec in recorders:
            rec.stop()
        print("\n".join(r.summary for r in recorders) or "nothing was recording this lab")
        return
    if args.file is None:
        print("\n".join(r.summary for r in lab.recorders) or "nothing records this lab "
              "(%balloon record FILE starts)")
        return
    rec = lab.record(os.path.expanduser(args.file))
    print(f"recording {_describe(lab)} to {rec.path} (%balloon record --stop ends it)")


@subcommand("replay")
@magic_arguments(name="balloon replay")
@argument("source", help="a recording file, or the name of a shipped one (balloonlab.recordings())")
@argument("--clock", default="virtual", choices=["virtual", "real"],
          help="virtual: %%balloon advance moves time (default); real: it runs by itself")
@argument("--speed", default="1", help="on the real clock, how many times faster than recorded (default 1)")
@_keep_doc
def _replay(magics: "BalloonMagics", args: argparse.Namespace) -> Any:
    """Replay a recording as an emulated lab (the recorded reports at their recorded times) and make it current."""
    try:
        speed = float(args.speed)
    except ValueError:
        raise UsageError(f"--speed: {args.speed!r} is not a number (e.g. 10)") from None
    if not 0 < speed < float("inf"):
        raise UsageError(f"--speed: must be a positive number, not {args.speed}")
    if args.clock == "virtual" and speed != 1:
        raise UsageError("--speed needs --clock real (on the virtual clock, %balloon advance "
                         "sets the pace)")
    from ..client.replay import replay

    return magics.start_lab(lambda: replay(os.path.expanduser(args.source), clock=args.clock, speed=speed))


# ---------------------------------------------------------------------------------------------------------------
# ballooning policies on real VMs (balloonlab.policy)

_BUILTIN_POLICIES = ("mom", "proxmox", "none")


@subcommand("policy")
@magic_arguments(name="balloon policy")
@argument("action", choices=("start", "stop", "status"), metavar="ACTION", help="start, stop or status")
@argument("policy", nargs="?", default=None,
          help="start: mom, proxmox, none, or a variable holding a balloonlab.policy.Policy")
@argument("--on", default=None, metavar="NAME",
          help="a variable holding the VMs: a list of labs or a host (default: the current host, else the current lab)")
@argument("--tick", default="10s", help="how often the policy decides (default 10s)")
@argument("--duration", default=None, help="stop after this long (default: until %%balloon policy stop)")
@argument("--apply", action="store_true", help="set the targets (default: a dry run that only records them)")
@_keep_doc
def _policy(magics: "BalloonMagics", args: argparse.Namespace) -> Any:
    """Run a ballooning policy on the VMs in the background (a dry run unless --apply); stop it; show its status."""
    current = magics.policy_run
    if args.action == "status":
        print(current.status() if current is not None else "no policy has run on real time in this shell "
              "(a simulated run returns its result)")
        return None
    if args.action == "stop":
        if current is None or not current.running:
            print("no policy is running")
            return None
        current.stop()
        print(current.status())
        return current
    from ..policy import LivePolicyRun, MomPolicy, NoPolicy, Policy, ProxmoxPolicy, run

    if current is not None and current.running:
        raise UsageError("%balloon policy start: a policy is already running; %balloon policy stop first")
    tick, duration = _duration_of("tick", args.tick), None
    if args.duration is not None:
        duration = _duration_of("duration", args.duration)
    name = args.policy
    builtin = {"mom": MomPolicy, "proxmox": ProxmoxPolicy, "none": NoPolicy}
    if name is None:
        raise UsageError(f"%balloon policy start: which policy? {', '.join(_BUILTIN_POLICIES)} or a variable")
    if name in builtin:
        policy = builtin[name]()
    else:
        policy = magics.user_ns.get(name)
        if not isinstance(policy, Policy):
            raise UsageError(f"%balloon policy start: {name!r} is not {', '.join(_BUILTIN_POLICIES)} nor a variable "
                             f"holding a balloonlab.policy.Policy")
    if args.on is None:
        host = magics.host
        vms: Any = host if host is not None and not host.closed else [magics.require_lab()]
    elif args.on in magics.user_ns:
        vms = magics.user_ns[args.on]
    else:
        raise UsageError(f"%balloon policy start: no variable named {args.on!r}")
    result = run(vms, policy, duration=duration, tick=tick, dry_run=not args.apply)
    if isinstance(result, LivePolicyRun):
        magics.policy_run = result
        mode = "applying targets" if args.apply else "dry run: decisions are recorded, not applied"
        print(f"{policy.label} runs every {format_duration(tick)} in the background ({mode}); "
              "%balloon policy status shows its decisions")
    return result


def _duration_of(what: str, text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"%balloon policy: --{what}: {exc}") from None
    if not value > 0:
        raise UsageError(f"%balloon policy: --{what} must be more than 0 s, got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------------------------


def interval_words(seconds: int) -> str:
    if seconds == 0:
        return "polling off (interval 0)"
    return f"polling every {seconds} s" + (f" ({format_duration(seconds)})" if seconds >= 60 else "")


def _describe(lab: Any) -> str:
    try:
        return f"{lab.backend} lab at {lab.socket_path or lab.name}"
    except Exception:  # a half-dead lab still deserves a name
        return "the lab"


def overview() -> str:
    """The text ``%balloon?`` shows: what the magic is, then every subcommand's usage and options."""
    parts = [
        "Drive QEMU's virtio-balloon guest statistics from IPython.",
        "",
        "  %balloon SUBCOMMAND [options]  [# comment]     (%balloon SUBCOMMAND -h: help on one)",
        "",
        "The current lab belongs to this shell: emulate, connect and launch replace it (closing the previous one",
        "if %balloon made it), `use` adopts one made in Python. emulate/connect/launch return the lab, so",
        "`lab = %balloon emulate` gives you the Python object too. %unload_ext balloonlab stops every watch,",
        "closes the panels and the labs %balloon made.",
        "",
        "Subcommands:",
    ]
    width = max(len(name) for name in SUBCOMMANDS)
    parts += [f"  {name.ljust(width)}  {sub.summary}" for name, sub in SUBCOMMANDS.items()]
    for sub in SUBCOMMANDS.values():
        parts.append("")
        parts.append(sub.help.rstrip())
    return "\n".join(parts) + "\n"
