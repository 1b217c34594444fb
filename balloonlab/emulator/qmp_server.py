"""The emulator's QMP server: QEMU's monitor protocol on a listening unix socket, in front of a Machine.

What a client sees is what QEMU 7.2 shows on its QMP socket (checked byte for byte against a real one):
the greeting, capabilities negotiation (``qmp_capabilities``, optionally ``{"enable": ["oob"]}``), the request
checks of QEMU's ``qmp_dispatch`` with their exact texts and QEMU's order of checks, ``id`` echoed as any JSON
value, one compact JSON object per reply terminated by CRLF, events only to negotiated clients.  Input is a
stream of JSON values, not lines (see jsonstream.py).

Where it differs from QEMU, on purpose and by default: several clients may be connected at once, and each gets
the greeting and its own negotiation.  QEMU serves one client per socket: a second connection is accepted by the
kernel but sits ungreeted in the listen backlog until the first client leaves, then QEMU greets it and answers
what it already sent (observed on QEMU 7.2; docs/differences.md ``concurrent-clients``).  ``single_client=True``
(``balloonlab emulate --single-client``, ``emulate(single_client=True)``) does exactly that, for scripts that
will later run against a real VM.  Commands run one at a time on the loop, so replies to one client come in
request order, as with QEMU.

Robustness: a client can send anything; broken input is answered, never fatal.  A failure inside the machine
that is not a :class:`~balloonlab.errors.QMPError` is logged and answered with a neutral GenericError.  A client
that stops reading its replies gets back-pressure: the server waits for it to drain them before it reads that
client's next requests (other clients are served meanwhile).  Events still queue for it, and a client whose unread
output passes :data:`MAX_UNREAD_OUTPUT` is dropped (QEMU would buffer without bound).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from ..tasks import spawn
from ..errors import QMPError
from .jsonstream import JSONMessageReader, Message, to_json

log = logging.getLogger(__name__)

#: Bytes of replies and events a client may leave unread before the server drops it.
MAX_UNREAD_OUTPUT = 64 << 20
#: How long close() waits for a client to take its last bytes (the reply to ``quit``) before cutting it off.
CLOSE_FLUSH_TIMEOUT = 2.0
_READ_SIZE = 1 << 16
#: After a failed accept (out of file descriptors...), wait this long before the next, rather than spin.
ACCEPT_RETRY_S = 0.1

NEGOTIATION_FIRST = "Expecting capabilities negotiation with 'qmp_capabilities'"
ALREADY_NEGOTIATED = "Capabilities negotiation is already complete, command ignored"
#: QMP capabilities a client may enable (QEMU's QMPCapability enum).
KNOWN_CAPABILITIES = ("oob",)


class _Client:
    """One connection: its writer and its negotiation state."""

    def __init__(self, writer: asyncio.StreamWriter, number: int) -> None:
        self.writer = writer
        self.number = number
        self.negotiated = False
        self.oob = False

    def send(self, line: str) -> None:
        """Queue one reply or event (already JSON) with QEMU's CRLF."""
        transport = self.writer.transport
        if transport.is_closing():
            return
        transport.write(line.encode("ascii") + b"\r\n")
        if transport.get_write_buffer_size() > MAX_UNREAD_OUTPUT:
            log.warning("QMP client %d does not read its replies; disconnecting it", self.number)
            transport.abort()


class QMPServer:
    """Serves one Machine to any number of clients on an already bound unix socket.

    ``machine`` needs ``greeting()``, ``execute(command, arguments)`` and ``add_event_listener(cb)``
    (``emulator/machine.py``);
    optionally ``oob_commands`` (names that may be run with ``exec-oob``; none by default, as QEMU's balloon
    commands).
    """

    def __init__(self, machine: Any, single_client: bool = False) -> None:
        self.machine = machine
        #: Serve one client at a time, as QEMU does: the others wait, ungreeted, in the kernel's listen queue.
        self.single_client = single_client
        self._accepting: asyncio.Task | None = None
        self._server: asyncio.AbstractServer | None = None
        self._clients: dict[_Client, asyncio.Task] = {}
        self._unsubscribe = None
        self._closing = False
        self._count = 0
        self._command_names: frozenset[str] | None = None

    async def start(self, sock: socket.socket) -> None:
        """Start accepting on ``sock`` (bound and listening)."""
        self._unsubscribe = self.machine.add_event_listener(self._broadcast)
        if self.single_client:
            # As QEMU: accept the next connection only when the current client has left, from a listen backlog
            # of 1 (QEMU's socket chardev; Linux then queues two connections and refuses further ones).
            sock.listen(1)
            self._accepting = spawn(self._one_at_a_time(sock), "balloonlab-qmp-accept")
        else:
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=_READ_SIZE)

    async def _one_at_a_time(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        with sock:
            while not self._closing:
                try:
                    conn, _ = await loop.sock_accept(sock)
                except OSError as exc:  # EMFILE, ECONNABORTED: that client is lost, the socket still serves
                    if sock.fileno() == -1:
                        return
                    log.warning("QMP socket: accept failed (%s); still accepting", exc)
                    await asyncio.sleep(ACCEPT_RETRY_S)
                    continue
                reader, writer = await asyncio.open_unix_connection(sock=conn, limit=_READ_SIZE)
                await self._serve(reader, writer)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    async def close(self) -> None:
        """Stop listening, let every client take what is queued for it (bounded), then disconnect them."""
        if self._closing:
            return
        self._closing = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._server is not None:
            self._server.close()
        for client in list(self._clients):
            client.writer.close()
        tasks = list(self._clients.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_FLUSH_TIMEOUT)
            for client in list(self._clients):
                client.writer.transport.abort()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._accepting is not None:  # single client: stop accepting; closing the socket drops the queue
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)

    # -- connections ---------------------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.transport.abort()
            return
        self._count += 1
        client = _Client(writer, self._count)
        task = asyncio.current_task()
        assert task is not None  # asyncio.start_unix_server runs each connection in its own task
        self._clients[client] = task
        try:
            client.send(to_json(self.machine.greeting()))
            stream = JSONMessageReader()
            while not self._closing:
                data = await reader.read(_READ_SIZE)
                if not data:
                    break
                for message in stream.feed(data):
                    if self._closing:
                        break
                    client.send(self._answer(client, message))
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client went away mid-conversation: nothing to answer
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("QMP client %d: unexpected failure; dropping the connection", client.number)
        finally:
            del self._clients[client]
            if not writer.transport.is_closing():
                writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    def _broadcast(self, event: dict) -> None:
        try:
            line = to_json(event)
        except (TypeError, ValueError):
            log.exception("event %r cannot be written as JSON; not sent", event.get("event"))
            return
        for client in list(self._clients):
            if client.negotiated:
                client.send(line)

    # -- requests (QEMU's monitor_qmp_dispatch and qmp_dispatch) ----------------------------------------------------
    def _answer(self, client: _Client, message: Message) -> str:
        """The reply line to one input message."""
        if message.error is not None:
            return to_json({"error": {"class": "GenericError", "desc": message.error}})
        request = message.value
        has_id = isinstance(request, dict) and "id" in request
        try:
            ret = self._dispatch(client, request)
            line = to_json({"return": {} if ret is None else ret, **({"id": request["id"]} if has_id else {})})
        except QMPError as exc:
            error = exc
        except Exception:
            command = request.get("execute", request.get("exec-oob")) if isinstance(request, dict) else None
            log.exception("emulator failure while running QMP command %r", command)
            error = QMPError("GenericError", f"The emulator failed to run {command}; see its log")
        else:
            return line
        reply: dict = {"id": request["id"]} if has_id else {}
        reply["error"] = error.to_wire()
        return to_json(reply)

    def _dispatch(self, client: _Client, request: Any) -> Any:
        if not isinstance(request, dict):
            raise QMPError("GenericError", "QMP input must be a JSON object")
        exec_key = None
        for name in request:  # parsed objects are in QEMU's QDict order, the order QEMU checks them in
            value = request[name]
            if name == "execute" or (name == "exec-oob" and client.oob):
                if not isinstance(value, str):
                    raise QMPError("GenericError", f"QMP input member '{name}' must be a string")
                if exec_key is not None:
                    raise QMPError("GenericError", f"QMP input member '{name}' clashes with '{exec_key}'")
                exec_key = name
            elif name == "arguments":
                if not isinstance(value, dict):
                    raise QMPError("GenericError", "QMP input member 'arguments' must be an object")
            elif name != "id":
                raise QMPError("GenericError", f"QMP input member '{name}' is unexpected")
        if exec_key is None:
            raise QMPError("GenericError", "QMP input lacks member 'execute'")
        command, oob = request[exec_key], exec_key == "exec-oob"
        arguments = request.get("arguments", {})
        if not client.negotiated:
            # Until negotiation only qmp_capabilities exists; QEMU rewords every "not found" then.
            if command != "qmp_capabilities":
                raise QMPError("CommandNotFound", NEGOTIATION_FIRST)
            return self._capabilities(client, arguments)
        if oob:
            if not self._exists(command):
                raise QMPError("CommandNotFound", f"The command {command} has not been found")
            if command not in getattr(self.machine, "oob_commands", ()):
                raise QMPError("GenericError", f"The command {command} does not support OOB")
        if command == "qmp_capabilities":
            return self._capabilities(client, arguments)
        return self.machine.execute(command, arguments)

    def _exists(self, command: str) -> bool:
        if self._command_names is None:
            listed = self.machine.execute("query-commands", {})
            self._command_names = frozenset(entry["name"] for entry in listed) | {"qmp_capabilities"}
        return command in self._command_names

    def _capabilities(self, client: _Client, arguments: dict) -> dict:
        """qmp_capabilities: QEMU's argument checks, then negotiation (once per connection)."""
        enable = arguments.get("enable", [])
        if "enable" in arguments:
            if not isinstance(enable, list):
                raise QMPError("GenericError", "Invalid parameter type for 'enable', expected: array")
            for i, capability in enumerate(enable):
                if not isinstance(capability, str):
                    raise QMPError("GenericError", f"Invalid parameter type for 'enable[{i}]', expected: string")
                if capability not in KNOWN_CAPABILITIES:
                    # sic: QEMU 7.2's input visitor names list elements 'null' here
                    raise QMPError("GenericError", f"Parameter 'null' does not accept value '{capability}'")
        for name in arguments:
            if name != "enable":
                raise QMPError("GenericError", f"Parameter '{name}' is unexpected")
        if client.negotiated:
            raise QMPError("CommandNotFound", ALREADY_NEGOTIATED)
        offered = self.machine.greeting().get("QMP", {}).get("capabilities", [])
        unavailable = [c for c in enable if c not in offered]
        if unavailable:
            raise QMPError("GenericError", f"Capability {', '.join(unavailable)} not available")
        client.negotiated = True
        client.oob = "oob" in enable
        return {}
