"""The emulator's QMP server over a real unix socket, byte for byte: greeting, negotiation, id echo, QEMU's error
texts for malformed requests and broken JSON, stream framing, limits, several clients, events, quit, robustness.

The expected strings are QEMU 7.2's (spec A, and tests/test_emulator_server_vs_qemu.py checks them against a
real QEMU where one is installed).
"""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest

from balloonlab.emulator.jsonstream import MAX_NESTING, MAX_TOKEN_COUNT, MAX_TOKEN_SIZE
from tests.fixtures.emulator import RawClient

GREETING_72 = (b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
               b'"package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}\r\n')
NOPE = b'{"execute": "no-such-command"}'
NOPE_REPLY = {"error": {"class": "CommandNotFound", "desc": "The command no-such-command has not been found"}}


def generic(desc: str) -> dict:
    return {"error": {"class": "GenericError", "desc": desc}}


@pytest.fixture
def path(emulator_socket) -> str:
    """A paused 7.2 VM with -device virtio-balloon-pci,id=balloon0."""
    return emulator_socket(qemu_version="7.2", start_paused=True)


@pytest.fixture
def client(path):
    with RawClient(path) as c:
        c.negotiate()
        yield c


def test_greeting_is_qemu_72_byte_for_byte(path):
    with RawClient(path) as c:
        assert c.greeting == GREETING_72


def test_commands_before_negotiation_are_refused_as_qemu_does(path):
    with RawClient(path) as c:
        expecting = {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}
        assert c.ask(b'{"execute": "query-status"}') == {"error": expecting}
        assert c.ask(b'{"execute": "no-such-command", "id": "x"}') == {"id": "x", "error": expecting}
        # malformed requests keep their own errors, and exec-oob is not a member yet
        assert c.ask(b'[]') == generic("QMP input must be a JSON object")
        assert c.ask(b'{"exec-oob": "query-status"}') == generic("QMP input member 'exec-oob' is unexpected")
        assert c.ask(b'{"execute": "qmp_capabilities", "id": 1}') == {"return": {}, "id": 1}
        assert c.ask(b'{"execute": "qmp_capabilities"}') == {"error": {
            "class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}
        assert c.ask(b'{"execute": "query-status"}') == {"return": {
            "status": "prelaunch", "singlestep": False, "running": False}}


@pytest.mark.parametrize("arguments, desc", [
    ('{"enable": "oob"}', "Invalid parameter type for 'enable', expected: array"),
    ('{"enable": null}', "Invalid parameter type for 'enable', expected: array"),
    ('{"enable": ["oob", 1]}', "Invalid parameter type for 'enable[1]', expected: string"),
    ('{"enable": ["bogus"]}', "Parameter 'null' does not accept value 'bogus'"),
    ('{"bogus": 1}', "Parameter 'bogus' is unexpected"),
])
def test_qmp_capabilities_argument_errors(path, arguments, desc):
    with RawClient(path) as c:
        request = f'{{"execute": "qmp_capabilities", "arguments": {arguments}}}'.encode()
        assert c.ask(request) == generic(desc)
        c.negotiate()  # a failed negotiation leaves the connection un-negotiated


def test_oob_capability_enables_exec_oob(path):
    with RawClient(path) as c:
        assert c.ask(b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}') == {"return": {}}
        assert c.ask(b'{"exec-oob": "query-status", "id": 7}') == {
            "id": 7, "error": {"class": "GenericError", "desc": "The command query-status does not support OOB"}}
        assert c.ask(b'{"exec-oob": "nope"}') == {
            "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}
        assert c.ask(b'{"exec-oob": "query-status", "execute": "query-status"}') == generic(
            "QMP input member 'execute' clashes with 'exec-oob'")
        assert c.ask(b'{"exec-oob": 5}') == generic("QMP input member 'exec-oob' must be a string")
        assert c.ask(b'{"execute": "query-status"}')["return"]["status"] == "prelaunch"


@pytest.mark.parametrize("sent, echoed", [
    (b'"abc"', b'"abc"'),
    (b"'single'", b'"single"'),
    (b'17', b'17'),
    (b'-9223372036854775808', b'-9223372036854775808'),
    (b'18446744073709551615', b'18446744073709551615'),
    (b'18446744073709551616', b'1.8446744073709552e+19'),  # beyond uint64: QEMU parses a double
    (b'2.0', b'2'),
    (b'0.1', b'0.10000000000000001'),
    (b'-0.0', b'-0'),
    (b'1e400', b'inf'),
    (b'null', b'null'),
    (b'true', b'true'),
    (b'{}', b'{}'),
    (b'[]', b'[]'),
    (b'[1, {"a": 2.0, "b": [null]}]', b'[1, {"a": 2, "b": [null]}]'),
    ('"é\x7f/\\u0000\\ud83d\\ude00\\"\'"'.encode(), b'"\\u00E9\\u007F/\\u0000\\uD83D\\uDE00\\"\'"'),
    (b'"\xc0\x80"', b'"\\u0000"'),  # modified UTF-8 NUL
    (b'"tab\\there"', b'"tab\\there"'),
    # objects come back in QEMU's QDict order (hash buckets; newest first when two keys share one)
    (b'{"b": 1, "a": 2, "zz": 3, "execute": 4, "id": 5}', b'{"a": 2, "execute": 4, "zz": 3, "b": 1, "id": 5}'),
    (b'{"minor": 1, "micro": 2}', b'{"micro": 2, "minor": 1}'),
    (b'{"micro": 1, "minor": 2}', b'{"minor": 2, "micro": 1}'),
])
def test_id_of_any_type_is_echoed_as_qemu_writes_it(client, sent, echoed):
    client.send(b'{"execute": "query-status", "id": ' + sent + b'}')
    assert client.line() == (b'{"return": {"status": "prelaunch", "singlestep": false, "running": false}, '
                             b'"id": ' + echoed + b'}\r\n')
    client.send(b'{"id": ' + sent + b', "execute": "nope"}')
    assert client.line() == (b'{"id": ' + echoed + b', "error": {"class": "CommandNotFound", '
                             b'"desc": "The command nope has not been found"}}\r\n')


@pytest.mark.parametrize("request_, reply", [
    (b'[]', generic("QMP input must be a JSON object")),
    (b'"execute" ', generic("QMP input must be a JSON object")),
    (b'1 ', generic("QMP input must be a JSON object")),
    (b'{"exec": "x"}', generic("QMP input member 'exec' is unexpected")),
    (b'{"exec": "x", "id": 7}', {"id": 7, **generic("QMP input member 'exec' is unexpected")}),
    (b'{"execute": 1}', generic("QMP input member 'execute' must be a string")),
    (b'{"execute": "query-status", "arguments": []}', generic("QMP input member 'arguments' must be an object")),
    (b'{"execute": "query-status", "x": 1}', generic("QMP input member 'x' is unexpected")),
    (b'{"x": 1, "execute": 1}', generic("QMP input member 'x' is unexpected")),  # QDict order, not input order
    (b'{}', generic("QMP input lacks member 'execute'")),
    (b'{"id": 1}', {"id": 1, **generic("QMP input lacks member 'execute'")}),
    (b'{"execute": "query-status", "arguments": {"x": 1}}', generic("Parameter 'x' is unexpected")),
    (NOPE, NOPE_REPLY),
])
def test_malformed_requests_get_qemus_texts(client, request_, reply):
    assert client.ask(request_) == reply


@pytest.mark.parametrize("sent, descs", [
    (b'True', ["JSON parse error, stray 'T'"]),
    (b'abc ', ["JSON parse error, invalid keyword 'abc'"]),
    (b'%d', ["JSON parse error, stray '%'"]),
    (b'\x00', ["JSON parse error, stray ''"]),
    (b'\xff', ["JSON parse error, stray '\ufffd'"]),
    (b'01', ["JSON parse error, stray '01'"]),
    (b'1.e5', ["JSON parse error, stray '1.e'"]),
    (b'{"a" 1}', ["JSON parse error, missing : in object pair"]),
    (b'{1: 2}', ["JSON parse error, key is not a string in object"]),
    (b'{"a": }', ["JSON parse error, expecting value"]),
    (b'{"a": 1 "b": 2}', ["JSON parse error, expected separator in dict"]),
    (b'[1 2]', ["JSON parse error, expected separator in list"]),
    (b'[1, ]', ["JSON parse error, expecting value"]),
    (b']', ["JSON parse error, expecting value"]),
    (b'{"execute": "x", "execute": "x"}', ["JSON parse error, duplicate key"]),
    (b'"\\q"', ["JSON parse error, invalid escape sequence in string"]),
    (b'"\\uZZZZ"', ["JSON parse error, \\uZZZZ is not a valid Unicode character"]),
    (b'"\\u12"', ['JSON parse error, \\u12" is not a valid Unicode character']),
    (b'"\\uD800\\u0041"', ["JSON parse error, \\uD800 is not a valid Unicode character"]),
    (b'"\\uFDD0"', ["JSON parse error, \\uFDD0 is not a valid Unicode character"]),
    (b'"\xef\xbf\xbe"', ["JSON parse error, invalid UTF-8 sequence in string"]),
    (b'"\xc0\xaf"', ["JSON parse error, invalid UTF-8 sequence in string"]),
    (b'"abc\n"', ["JSON parse error, stray '\"abc\n'"]),
    # an error inside an object: the rest of the line is skipped up to the next structural character
    (b'{"execute": "no\xffpe"}', ["JSON parse error, stray '\"no\ufffd'", "JSON parse error, expecting value"]),
    (b'123\x80', ["QMP input must be a JSON object", "JSON parse error, stray '\ufffd'"]),
])
def test_broken_json_is_answered_and_the_connection_stays_usable(client, sent, descs):
    client.send(sent + b'\n')
    assert [client.reply() for _ in descs] == [generic(d) for d in descs]
    assert client.ask(NOPE) == NOPE_REPLY


def test_input_is_a_stream_of_values_not_lines(client):
    status = {"return": {"status": "prelaunch", "singlestep": False, "running": False}}
    # no newline at all (what qemu.qmp sends), several values in one write
    client.send(b'{"execute":"query-status","id":1}{"execute":"query-status","id":2}')
    assert [client.reply(), client.reply()] == [{**status, "id": 1}, {**status, "id": 2}]
    # one object over several lines
    client.send(b'{\n  "execute":\n "query-status",\r\n\t"id": 3\n}\n')
    assert client.reply() == {**status, "id": 3}
    # one byte per write, with a split escape and a split UTF-8 sequence
    for byte in '{"execute": "query-status", "id": "\\u00e9\u00e9"}'.encode():
        client.send(bytes((byte,)))
    assert client.reply() == {**status, "id": "\u00e9\u00e9"}
    # a number at the end of the input waits for the character that ends it
    client.send(b'42')
    client.send(b' ' + NOPE)
    assert [client.reply(), client.reply()] == [generic("QMP input must be a JSON object"), NOPE_REPLY]


def test_nesting_limit_as_qemu(client):
    client.send(b'[' * MAX_NESTING + b']' * MAX_NESTING)
    assert client.reply() == generic("QMP input must be a JSON object")  # deepest accepted: parsed, then refused
    client.send(b'[' * (MAX_NESTING + 1) + b']' * (MAX_NESTING + 1))
    assert client.reply() == generic("JSON nesting depth limit exceeded")
    # QEMU then reads each leftover ']' as a message of its own
    replies = [client.reply() for _ in range(MAX_NESTING + 1)]
    assert replies == [generic("JSON parse error, expecting value")] * (MAX_NESTING + 1)
    assert client.ask(NOPE) == NOPE_REPLY


def test_deeply_nested_id_is_echoed(client):
    deep = b'[' * (MAX_NESTING - 1) + b'1' + b']' * (MAX_NESTING - 1)
    client.send(b'{"execute": "nope", "id": ' + deep + b'}')
    assert client.line() == (b'{"id": ' + deep + b', "error": {"class": "CommandNotFound", '
                             b'"desc": "The command nope has not been found"}}\r\n')


def test_token_count_limit(client):
    # '[' + n-1 times '1,' + '1]' is 2n+1 tokens: one more than QEMU allows
    n = MAX_TOKEN_COUNT // 2
    client.send(b'[' + b'1,' * (n - 1) + b'1]')
    assert client.reply() == generic("JSON token count limit exceeded")
    assert client.ask(NOPE) == NOPE_REPLY


def test_token_size_limit(client):
    # A message of 64 MiB + 1 of tokens: the string fits, the message does not.
    client.send(b'["' + b'a' * (MAX_TOKEN_SIZE - 3) + b'"]')
    assert client.reply() == generic("JSON token size limit exceeded")
    assert client.reply() == generic("JSON parse error, expecting value")  # the lone ']'
    # One token longer than the limit: cut at the limit, the rest lexed anew (here: a keyword, then a string
    # that the next line's control character ends).
    client.send(b'"' + b'b' * (MAX_TOKEN_SIZE + 5) + b'"\x01\n')
    assert client.reply() == generic("JSON token size limit exceeded")
    assert client.reply() == generic("JSON parse error, invalid keyword 'bbbbb'")
    assert client.reply() == generic("JSON parse error, stray '\"\x01'")
    assert client.ask(NOPE) == NOPE_REPLY


def test_several_clients_negotiate_separately_and_events_reach_only_negotiated_ones(path):
    with RawClient(path) as a, RawClient(path) as b, RawClient(path) as c:
        assert a.greeting == b.greeting == c.greeting == GREETING_72
        a.negotiate()
        b.negotiate()
        assert a.ask(b'{"execute": "cont", "id": "a"}')["event"] == "RESUME"
        assert a.reply() == {"return": {}, "id": "a"}
        assert b.reply()["event"] == "RESUME"
        b.send(b'{"execute": "stop"}')
        assert b.reply()["event"] == "STOP"
        assert b.reply() == {"return": {}}
        assert a.reply()["event"] == "STOP"
        # c never negotiated: it got no event; its first reply is to its own request
        assert c.ask(b'{"execute": "query-status"}')["error"]["class"] == "CommandNotFound"
        c.negotiate()
        assert c.ask(b'{"execute": "query-status"}')["return"]["status"] == "paused"


def test_event_wire_format(client):
    client.send(b'{"execute": "cont"}')
    line = client.line()
    assert line.startswith(b'{"timestamp": {"seconds": ') and line.endswith(b', "event": "RESUME"}\r\n')
    event = json.loads(line)
    assert list(event) == ["timestamp", "event"] and list(event["timestamp"]) == ["seconds", "microseconds"]


def test_a_client_leaving_mid_message_does_not_disturb_others(path):
    with RawClient(path) as stays:
        stays.negotiate()
        for partial in (b'{"execute": "query-st',
                        b'{"execute": "qmp_capabilities"}{"execute": "query-status", "id": ["'):
            with RawClient(path) as leaves:
                leaves.send(partial)
        with RawClient(path) as abrupt:  # leaves without reading what it is sent
            abrupt.send(b'{"execute": "qmp_capabilities"}' + NOPE * 100)
        assert stays.ask(NOPE) == NOPE_REPLY


def test_machine_failures_become_a_neutral_generic_error(emulator_factory, emulator_loop):
    emulator = emulator_factory(qemu_version="7.2", start_paused=True)
    real_execute = emulator.machine.execute

    def faulty(command, arguments):
        if command == "query-status":
            raise RuntimeError("a bug in the device model")
        if command == "query-version":
            return {"not json": object()}
        return real_execute(command, arguments)

    emulator_loop.call(lambda: setattr(emulator.machine, "execute", faulty))
    with RawClient(emulator.socket_path) as c:
        c.negotiate()
        for command in ("query-status", "query-version"):
            reply = c.ask(b'{"execute": "%s", "id": 1}' % command.encode())
            assert reply["id"] == 1 and reply["error"]["class"] == "GenericError"
            assert "bug" not in reply["error"]["desc"] and command in reply["error"]["desc"]
        assert c.ask(b'{"execute": "query-balloon"}') == {"return": {"actual": 512 << 20}}


def test_private_socket_and_directory_modes_and_cleanup(emulator_factory, emulator_loop):
    emulator = emulator_factory()
    directory = os.path.dirname(emulator.socket_path)
    assert stat.S_ISSOCK(os.stat(emulator.socket_path).st_mode)
    assert stat.S_IMODE(os.stat(emulator.socket_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    emulator_loop.run(emulator.stop())
    assert not os.path.exists(emulator.socket_path) and not os.path.exists(directory)
    emulator_loop.run(emulator.wait_closed())  # returns at once after stop()
    emulator_loop.run(emulator.stop())  # a second stop is harmless


def test_given_path_gets_mode_0600_and_a_stale_socket_is_replaced(emulator_factory, tmp_path):
    path = str(tmp_path / "given.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # a socket file nobody listens on, as a crashed run leaves it
    emulator = emulator_factory(socket_path=path)
    assert emulator.socket_path == path and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with RawClient(path) as c:
        assert c.greeting.startswith(b'{"QMP": ')


def test_a_path_in_use_or_not_a_socket_is_refused(emulator_factory, tmp_path):
    from balloonlab.errors import EmulatorOptionError

    busy = emulator_factory().socket_path
    with pytest.raises(EmulatorOptionError, match="in use"):
        emulator_factory(socket_path=busy)
    regular = tmp_path / "file"
    regular.write_text("keep me")
    with pytest.raises(EmulatorOptionError, match="not a socket"):
        emulator_factory(socket_path=str(regular))
    assert regular.read_text() == "keep me"
    with pytest.raises(EmulatorOptionError, match="too long"):
        emulator_factory(socket_path=str(tmp_path / ("x" * 120)))
    with pytest.raises(EmulatorOptionError, match="cannot listen"):
        emulator_factory(socket_path=str(tmp_path / "missing-dir" / "q.sock"))


def test_quit_replies_sends_shutdown_then_stops_and_removes_the_socket(emulator_factory, emulator_loop):
    emulator = emulator_factory(qemu_version="7.2")
    with RawClient(emulator.socket_path) as a, RawClient(emulator.socket_path) as b:
        a.negotiate()
        b.negotiate()
        shutdown = {"event": "SHUTDOWN", "data": {"guest": False, "reason": "host-qmp-quit"}}
        event = a.ask(b'{"execute": "quit", "id": "bye"}')
        assert {k: event[k] for k in ("event", "data")} == shutdown
        assert a.reply() == {"return": {}, "id": "bye"}
        event = b.reply()
        assert {k: event[k] for k in ("event", "data")} == shutdown
        assert a.eof() and b.eof()
    emulator_loop.run(emulator.wait_closed())
    assert not os.path.exists(emulator.socket_path)
    with pytest.raises(OSError):
        RawClient(emulator.socket_path)
