"""The exceptions balloonlab raises: one tree, rooted at :class:`BalloonError`.

``except balloonlab.BalloonError`` catches every error of ours and nothing else.  Each class ends in ``Error``;
a few older names stay as aliases (``BalloonDisconnected`` is :class:`BalloonDisconnectedError`).  The messages are
written for the person at the notebook: they say what happened and what to do.

How this tree meets ``qemu.qmp``'s: there ``qemu.qmp.QMPError`` is the root of everything the protocol library
raises, and ``qemu.qmp.ExecuteError`` is QEMU's error reply.  Here :class:`QMPError` means only the latter, the
``{"error": {"class": ..., "desc": ...}}`` answer of QEMU (real or emulated).  A lost or refused connection, which
``qemu.qmp`` reports as ``ConnectError``, ``StateError`` or ``EOFError``, becomes :class:`BalloonDisconnectedError`.
No ``qemu.qmp`` exception escapes a balloonlab call.

::

    BalloonError
    +-- QMPError                    QEMU answered a command with an error (class and desc verbatim)
    +-- BalloonDisconnectedError    the QMP connection is gone
    +-- NoBalloonDeviceError        the VM has no virtio-balloon device
    +-- VirtualClockRequiredError   advance() needs an emulated lab on the virtual clock
    +-- UnsupportedBackendError     the operation needs another kind of lab
    +-- InvalidValueError           a value balloonlab refuses before anything is sent (also a ValueError)
    +-- QMPTextError                a %%qmp cell that is not QMP (also a ValueError)
    +-- UnknownVMError              no VM of that name on the host (also a KeyError)
    +-- EmulatorOptionError         balloonlab emulate / emulate() options
    +-- LaunchError                 a live QEMU could not be booted
    +-- GuestImageError             the tiny guest image could not be built or found
    +-- GuestExecError              a command in a live guest failed
    +-- JupyterLabError             balloonlab lab cannot start JupyterLab
    +-- RecordingError              a recording cannot be read (names the file and the line), or written
    +-- PolicyError                 a policy raised, answered nonsense or took too long (names the tick and VM)
    +-- LibvirtError                libvirt refused a call (its code and message verbatim)
"""

from __future__ import annotations


class BalloonError(Exception):
    """Root of every balloonlab error."""

    #: Where it was met, when that is what a person typed: a magic sets ``"%balloon stats"`` so IPython shows the
    #: one form every magic error has, ``%balloon SUBCOMMAND: what is wrong (what to do)``.
    where: str | None = None

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing a traceback: a user error deserves one clean line.
        return [f"{self.where or type(self).__name__}: {self}"]


class QMPError(BalloonError):
    """QEMU answered a command with an error (``qemu.qmp`` calls this ``ExecuteError``).

    ``error_class`` and ``desc`` are exactly what QEMU put on the wire (for example ``"GenericError"`` and
    ``"timer value must be greater than zero"``).  The emulator raises the same class to answer with an error, so
    one class describes the reply on both sides of the wire.
    """

    def __init__(self, error_class: str, desc: str, command: str | None = None) -> None:
        super().__init__(f"{error_class}: {desc}")
        self.error_class = error_class
        self.desc = desc
        self.command = command

    def to_wire(self) -> dict[str, str]:
        """The ``error`` member of a QMP reply, as QEMU words it."""
        return {"class": self.error_class, "desc": self.desc}


class BalloonDisconnectedError(BalloonError):
    """The QMP connection is gone: QEMU (or the emulator) exited, or its socket disappeared.

    Call ``lab.reconnect()`` once QEMU is back, or start a new lab.
    """


class NoBalloonDeviceError(BalloonError):
    """The VM has no virtio-balloon device (add ``-device virtio-balloon-pci`` to its command line)."""


class VirtualClockRequiredError(BalloonError):
    """``advance()`` only works on an emulated lab started with ``clock="virtual"``."""


class UnsupportedBackendError(BalloonError):
    """The operation needs another kind of lab (``trace``/``guest``: an emulated one; ``guest_exec``: a launched
    live VM)."""


class InvalidValueError(BalloonError, ValueError):
    """A size, duration or interval that balloonlab refuses before sending anything (``"512 bytes: did you mean
    '512M'?"``).  Also a ``ValueError``, so code that catches that keeps working."""


class QMPTextError(BalloonError, ValueError):
    """A ``%%qmp`` cell that is not QMP balloonlab can send.  ``line`` is 1-based (counted from ``first_line``)."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.reason = message


class UnknownVMError(BalloonError, KeyError):
    """``host["vm9"]`` or ``%balloon use vm9``: no VM of that name on the host.  The message lists the names and
    suggests the nearest; also a ``KeyError``, as for any mapping."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class EmulatorOptionError(BalloonError):
    """``balloonlab emulate`` was given an option it does not know, or a value it cannot use."""


class LaunchError(BalloonError):
    """balloonlab could not boot a live QEMU (missing binary, bad option, guest never became ready)."""


class GuestImageError(BalloonError):
    """The tiny guest image (kernel + busybox initramfs) could not be built or found."""


class GuestExecError(BalloonError):
    """A shell command run in a live lab's guest (``vm.exec``) failed, timed out, or the guest is unreachable.

    ``exit_code`` is the command's exit status (None when it never finished) and ``output`` what it printed.
    """

    def __init__(self, message: str, exit_code: int | None = None, output: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.output = output


class JupyterLabError(BalloonError):
    """``balloonlab lab`` cannot start: JupyterLab is missing or the notebooks cannot be found."""


class RecordingError(BalloonError):
    """A recording that cannot be played or made: empty, truncated in its header, corrupt, of another format
    version, or a file that cannot be opened.  The message names the file and the line (``session.blab: line 7:
    corrupt record, not JSON``)."""


class PolicyError(BalloonError):
    """A ballooning policy failed at one tick of a run (``balloonlab.policy.run``): its ``decide`` raised,
    returned something that is not ``{vm name: positive int bytes}``, or took longer than the run allows.

    ``tick`` and ``vm`` (None when no single VM is at fault) say where; ``run`` is the run up to that tick, with
    everything it recorded, so nothing is lost.
    """

    def __init__(self, message: str, *, tick: int, vm: str | None = None, run: object = None) -> None:
        super().__init__(message)
        self.tick = tick
        self.vm = vm
        self.run = run


class LibvirtError(BalloonError):
    """libvirt refused a call of the libvirt backend (``balloonlab.connect("qemu:///system", domain=...)``).

    ``code`` is libvirt's ``virErrorNumber`` (``libvirt.VIR_ERR_*``) and ``libvirt_message`` its message, verbatim,
    as :class:`QMPError` keeps QEMU's.  A lost libvirtd or a domain that is gone is
    :class:`BalloonDisconnectedError` instead (``lab.reconnect()`` gets it back).
    """

    def __init__(self, message: str, code: int | None = None, libvirt_message: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.libvirt_message = libvirt_message


# Older names, kept so existing notebooks and scripts keep working.
BalloonDisconnected = BalloonDisconnectedError
NoBalloonDevice = NoBalloonDeviceError
VirtualClockRequired = VirtualClockRequiredError
UnsupportedBackend = UnsupportedBackendError

__all__ = [
    "BalloonError",
    "QMPError",
    "BalloonDisconnectedError",
    "NoBalloonDeviceError",
    "VirtualClockRequiredError",
    "UnsupportedBackendError",
    "InvalidValueError",
    "QMPTextError",
    "UnknownVMError",
    "EmulatorOptionError",
    "LaunchError",
    "GuestImageError",
    "GuestExecError",
    "JupyterLabError",
    "RecordingError",
    "PolicyError",
    "LibvirtError",
    "BalloonDisconnected",
    "NoBalloonDevice",
    "VirtualClockRequired",
    "UnsupportedBackend",
]
