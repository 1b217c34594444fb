"""One libvirt connection (one URI) for the libvirt backend: opening it, calling it, its events, its errors.

Why a class of its own: every lab on a host and every host of a fleet needs the same four things, and none of them
is trivial with libvirt-python:

* **opening without hanging**: ``virConnectOpenAuth`` blocks (an unreachable ``qemu+ssh`` host can take minutes),
  so it runs on a helper thread and the caller gives up at its timeout.  Credentials are never asked for, stored
  or printed: the auth callback refuses every prompt (ssh keys or agent, or libvirt's ``auth.conf``, are the way
  in) and ``+ssh`` URIs get ``no_tty=1`` so ssh cannot prompt on a terminal either;
* **calling without blocking**: libvirt calls are blocking C calls, so they run on this host's small thread pool
  and balloonlab's loop awaits them with a timeout (``client/loop.py``);
* **events**: libvirt delivers domain events only to a process that runs an event loop implementation; one
  daemon thread runs libvirt's default one for the whole process (:func:`start_event_loop`).  Callbacks run on
  that thread and only hand the event on to listeners (who post it to balloonlab's loop); nothing prints;
* **errors in balloonlab's terms**: a lost libvirtd or a vanished domain becomes
  :class:`~balloonlab.errors.BalloonDisconnectedError` (``lab.reconnect()`` gets it back), anything else
  libvirt refuses :class:`~balloonlab.errors.LibvirtError` with libvirt's code and words.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import urllib.parse
from types import ModuleType
from typing import Any, Callable, TypeVar

from ..errors import BalloonDisconnectedError, LibvirtError

log = logging.getLogger("balloonlab.libvirt")
T = TypeVar("T")

#: What to install when libvirt-python is missing (it builds against the system's libvirt).
INSTALL_HINT = ("the libvirt backend needs libvirt-python: pip install 'balloonlab[libvirt]' (it builds against "
                "the system's libvirt; on Debian first apt-get install libvirt-dev pkg-config gcc)")
START_HINT = ("Is libvirtd running on that host? Start it (systemctl start libvirtd; without systemd: "
              "virtlogd --daemon && libvirtd --daemon), and check that the URI names the right host and socket.")

#: How an error says the domain itself went away (LibvirtClient marks its lab disconnected on it).
DOMAIN_GONE = "is gone or not running"

#: A listener gets (kind, data): kind "balloon" (data: actual KiB), "lifecycle" (data: (event, detail)) or "closed"
#: (data: the reason); it runs on libvirt's event thread and must only hand the event on.
Listener = Callable[[str, Any], None]

_event_lock = threading.Lock()
_event_thread: threading.Thread | None = None


def require_libvirt() -> ModuleType:
    """The ``libvirt`` module, or a :class:`LibvirtError` that says what to install."""
    try:
        import libvirt
    except ImportError:
        raise LibvirtError(INSTALL_HINT) from None
    return libvirt


def _quiet(_ctx: Any, _err: Any) -> None:
    """libvirt's default error handler prints every error on stderr; the exception carries it already."""


def start_event_loop() -> None:
    """Register libvirt's default event implementation and run it on a daemon thread (once per process).

    It must be registered before a connection opens for that connection to deliver events and keepalives.
    """
    global _event_thread
    libvirt = require_libvirt()
    with _event_lock:
        if _event_thread is not None:
            return
        libvirt.registerErrorHandler(_quiet, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # one bad callback must not end event delivery for the process
                    log.exception("balloonlab: libvirt event loop iteration failed")

        _event_thread = threading.Thread(target=run, name="balloonlab-libvirt-events", daemon=True)
        _event_thread.start()


def redact_uri(uri: str) -> str:
    """The URI as balloonlab shows it: a password in its user part is replaced, never printed."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _no_tty(uri: str) -> str:
    """``+ssh`` URIs get ``no_tty=1``: ssh must fail rather than prompt on a terminal nobody watches."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme.endswith("+ssh") or "no_tty=" in parts.query:
        return uri
    return urllib.parse.urlunsplit(parts._replace(query="&".join(filter(None, [parts.query, "no_tty=1"]))))


class LibvirtHost:
    """One open connection to one libvirt URI; shared by the labs of that host.  Build it with :meth:`open`."""

    def __init__(self, uri: str, conn: Any, timeout: float) -> None:
        self._uri = uri
        self.uri = redact_uri(uri)
        self.conn = conn
        self.timeout = timeout
        self._pool = _pool()
        self._pool_closed = False
        self._reopen_lock = threading.Lock()
        self._listeners: dict[str, list[Listener]] = {}
        self._lock = threading.Lock()
        self._callbacks: list[int] = []
        self.closed_reason: str | None = None
        self._register_events()

    # Opening ---------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, uri: str, timeout: float = 10.0) -> "LibvirtHost":
        """Connect to ``uri`` (blocking, at most ``timeout`` s); clear errors for libvirt missing, libvirtd down,
        refused credentials and unreachable hosts."""
        libvirt = require_libvirt()
        start_event_loop()
        conn = _open_with_timeout(libvirt, _no_tty(uri), timeout)
        return cls(uri, conn, timeout)

    def reopen(self) -> None:
        """Open the same URI again (libvirtd restarted, the network came back); the listeners carry over.

        The labs of a fleet share this host, and several may find it lost at once: the first reopens it, the
        others find it open (the lock).  The thread pool is kept, so their calls in flight are not refused."""
        libvirt = require_libvirt()
        with self._reopen_lock:
            if self.alive:
                return
            self._drop_connection()
            self.conn = _open_with_timeout(libvirt, _no_tty(self._uri), self.timeout)
            self.closed_reason = None
            if self._pool_closed:  # disconnect() ended the threads too
                self._pool, self._pool_closed = _pool(), False
            self._register_events()

    @property
    def alive(self) -> bool:
        if self.conn is None or self.closed_reason is not None:
            return False
        try:
            return bool(self.conn.isAlive())
        except Exception:
            return False

    # Calling ---------------------------------------------------------------------------------------------------
    async def call(self, fn: Callable[..., T], *args: Any, domain: str | None = None,
                   timeout: float | None = None) -> T:
        """Run a blocking libvirt call on this host's threads; libvirt's errors become balloonlab's."""
        loop = asyncio.get_running_loop()
        timeout = self.timeout if timeout is None else timeout
        try:
            running = loop.run_in_executor(self._pool, functools.partial(fn, *args))
        except RuntimeError:  # the pool is shut down: disconnect() or close() ended this host's connection
            raise BalloonDisconnectedError(
                f"the libvirt connection to {self.uri} is closed; call lab.reconnect() to open it again") from None
        try:
            return await asyncio.wait_for(running, timeout)
        except asyncio.TimeoutError:
            raise BalloonDisconnectedError(
                f"libvirt at {self.uri} did not answer within {timeout:g} s (host unreachable or libvirtd stuck?); "
                "call lab.reconnect() once it answers again") from None
        except Exception as exc:
            raise self.translate(exc, domain) from None

    def translate(self, exc: BaseException, domain: str | None = None) -> Exception:
        """A libvirt exception in balloonlab's terms (see the module docstring)."""
        libvirt = require_libvirt()
        if not isinstance(exc, libvirt.libvirtError):
            return exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
        code, message = exc.get_error_code(), exc.get_error_message() or str(exc)
        lost_link = code in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT) or (
            exc.get_error_domain() == libvirt.VIR_FROM_RPC)
        if lost_link or not self.alive:
            return BalloonDisconnectedError(
                f"lost the connection to libvirt at {self.uri} ({message}). {START_HINT} Then call lab.reconnect().")
        if domain is not None and (code == libvirt.VIR_ERR_NO_DOMAIN or (
                code == libvirt.VIR_ERR_OPERATION_INVALID and "not running" in message)):
            return BalloonDisconnectedError(
                f"domain {domain!r} on {self.uri} {DOMAIN_GONE} ({message}); start it again "
                "(virsh start) and call lab.reconnect()")
        return LibvirtError(f"libvirt at {self.uri}: {message}", code, message)

    # Events ----------------------------------------------------------------------------------------------------
    def listen(self, uuid: str, listener: Listener) -> Callable[[], None]:
        """Deliver this domain's balloon and lifecycle events, and the connection's loss, to ``listener``."""
        with self._lock:
            self._listeners.setdefault(uuid, []).append(listener)

        def stop() -> None:
            with self._lock:
                listeners = self._listeners.get(uuid, [])
                if listener in listeners:
                    listeners.remove(listener)

        return stop

    def _register_events(self) -> None:
        libvirt = require_libvirt()
        conn = self.conn
        try:
            conn.setKeepAlive(5, 3)  # a dead remote host is noticed in about 20 s, not at the next TCP timeout
        except libvirt.libvirtError as exc:  # local drivers without keepalive support
            log.debug("balloonlab: no libvirt keepalive on %s: %s", self.uri, exc)
        self._callbacks = [
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE,
                                        lambda _c, dom, actual, _o: self._dispatch(dom, "balloon", actual), None),
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                        lambda _c, dom, ev, detail, _o: self._dispatch(dom, "lifecycle", (ev, detail)),
                                        None),
        ]
        conn.registerCloseCallback(lambda _c, reason, _o: self._closed(reason), None)

    def _dispatch(self, dom: Any, kind: str, data: Any) -> None:
        with self._lock:
            listeners = list(self._listeners.get(dom.UUIDString(), ()))
        for listener in listeners:
            try:
                listener(kind, data)
            except Exception:
                log.exception("balloonlab: a libvirt event listener raised")

    def _closed(self, reason: int) -> None:
        libvirt = require_libvirt()
        why = {libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "libvirtd closed the connection",
               libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "the host stopped answering keepalives",
               libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "a connection error",
               libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by balloonlab"}.get(reason, f"reason {reason}")
        self.closed_reason = why
        with self._lock:
            listeners = [listener for group in self._listeners.values() for listener in group]
        for listener in listeners:
            try:
                listener("closed", why)
            except Exception:
                log.exception("balloonlab: a libvirt event listener raised")

    # Node ------------------------------------------------------------------------------------------------------
    def node_memory(self) -> dict[str, int]:
        """``virNodeGetMemoryStats`` over all cells (KiB: total, free, buffers, cached), blocking."""
        libvirt = require_libvirt()
        try:
            return dict(self.conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS))
        except Exception as exc:
            raise self.translate(exc) from None

    # Closing ---------------------------------------------------------------------------------------------------
    def _drop_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                conn.domainEventDeregisterAny(callback)
            except Exception:  # the connection may be gone already: nothing left to deregister
                pass
        try:
            conn.unregisterCloseCallback()
        except Exception:
            pass
        try:
            conn.close()
        except Exception as exc:
            log.debug("balloonlab: closing libvirt connection %s: %r", self.uri, exc)

    def disconnect(self) -> None:
        """Close the connection and its threads (idempotent); :meth:`reopen` opens it again."""
        with self._reopen_lock:
            self.closed_reason = self.closed_reason or "closed by balloonlab"
            self._drop_connection()
            self._pool_closed = True
            self._pool.shutdown(wait=False, cancel_futures=True)

    close = disconnect

    def __repr__(self) -> str:
        return f"<LibvirtHost {self.uri} {'open' if self.alive else 'closed'}>"


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    # Two threads: a slow call (a remote host) does not hold up the next one; libvirt connections are thread-safe.
    return concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="balloonlab-libvirt")


def _open_with_timeout(libvirt: ModuleType, uri: str, timeout: float) -> Any:
    """``virConnectOpenAuth`` on a helper thread; a connection that arrives after the caller gave up is closed."""
    shown = redact_uri(uri)
    result: dict[str, Any] = {}
    done = threading.Event()
    decided = threading.Lock()  # the caller giving up and a connection arriving: one of them decides, never both
    abandoned = False

    def refuse(_creds: Any, _opaque: Any) -> int:
        return -1  # never ask anyone for a password; never hold one

    auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE, libvirt.VIR_CRED_ECHOPROMPT,
             libvirt.VIR_CRED_NOECHOPROMPT], refuse, None]

    def opener() -> None:
        try:
            conn = libvirt.openAuth(uri, auth, 0)
        except Exception as exc:
            with decided:
                result["error"] = exc
                done.set()
            return
        with decided:
            late = abandoned
            if not late:
                result["conn"] = conn
            done.set()
        if late:
            conn.close()  # nobody waits for it any more

    threading.Thread(target=opener, name="balloonlab-libvirt-open", daemon=True).start()
    done.wait(timeout)
    with decided:
        if not done.is_set():
            abandoned = True
    if abandoned:
        raise BalloonDisconnectedError(
            f"no answer from libvirt at {shown} within {timeout:g} s: is the host reachable (ssh, firewall)? "
            f"{START_HINT}")
    if "conn" in result:
        return result["conn"]
    exc = result["error"]
    if isinstance(exc, libvirt.libvirtError):
        code, message = exc.get_error_code(), exc.get_error_message() or str(exc)
        if code == libvirt.VIR_ERR_AUTH_FAILED or "auth" in message.lower():
            raise LibvirtError(
                f"libvirt at {shown} refused the credentials ({message}). balloonlab never asks for or stores "
                "passwords: use an ssh key or agent, or libvirt's auth.conf, and check the user in the URI.",
                code, message) from None
        raise BalloonDisconnectedError(f"cannot connect to libvirt at {shown}: {message}. {START_HINT}") from None
    raise BalloonDisconnectedError(f"cannot connect to libvirt at {shown}: {exc!r}. {START_HINT}") from None


__all__ = ["DOMAIN_GONE", "INSTALL_HINT", "LibvirtHost", "redact_uri", "require_libvirt", "start_event_loop"]
