"""The exceptions balloonlab raises.

Every error derives from :class:`BalloonError`, so ``except balloonlab.BalloonError`` catches all of ours and
nothing else.  The messages are written for the person at the notebook: they say what happened and what to do.

:class:`QMPError` is one class on both sides of the wire: the emulator raises it to answer a command with
``{"error": {"class": ..., "desc": ...}}``, and the client raises it when QEMU (real or emulated) answers so.
"""

from __future__ import annotations


class BalloonError(Exception):
    """Root of every balloonlab error."""

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing a traceback: a user error deserves one clean line.
        return [f"{type(self).__name__}: {self}"]


class QMPError(BalloonError):
    """QEMU answered a command with an error.

    ``error_class`` and ``desc`` are exactly what QEMU put on the wire (for example ``"GenericError"`` and
    ``"timer value must be greater than zero"``).
    """

    def __init__(self, error_class: str, desc: str, command: str | None = None) -> None:
        super().__init__(f"{error_class}: {desc}")
        self.error_class = error_class
        self.desc = desc
        self.command = command

    def to_wire(self) -> dict:
        """The ``error`` member of a QMP reply, as QEMU words it."""
        return {"class": self.error_class, "desc": self.desc}


class BalloonDisconnected(BalloonError):
    """The QMP connection is gone: QEMU (or the emulator) exited, or its socket disappeared.

    Call ``lab.reconnect()`` once QEMU is back, or start a new lab.
    """


class NoBalloonDevice(BalloonError):
    """The VM has no virtio-balloon device (add ``-device virtio-balloon-pci`` to its command line)."""


class VirtualClockRequired(BalloonError):
    """``advance()`` only works on an emulated lab started with ``clock="virtual"``."""


class UnsupportedBackend(BalloonError):
    """The operation needs another kind of lab (``trace``/``guest``: an emulated one; ``guest_exec``: a launched
    live VM)."""


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


class EmulatorOptionError(BalloonError):
    """``balloonlab emulate`` was given an option it does not know, or a value it cannot use."""


__all__ = [
    "BalloonError",
    "QMPError",
    "BalloonDisconnected",
    "NoBalloonDevice",
    "VirtualClockRequired",
    "UnsupportedBackend",
    "LaunchError",
    "GuestImageError",
    "GuestExecError",
    "EmulatorOptionError",
]
