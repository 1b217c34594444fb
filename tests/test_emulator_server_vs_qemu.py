"""Differential test of the protocol layer: the same bytes to a real QEMU (started with -S, no guest) and to the
emulator answering as that QEMU's version must get the same bytes back.

Every case is followed by a resynchronisation marker: a control character (which ends any string, number or
recovery state with an error, and resets QEMU's message parser) and a request with id "sync"; everything
before the answer to that request is the case's answer.  The cases are hand-picked ones plus seeded random
concatenations of JSON fragments, run once before negotiation (which the random cases may perform themselves)
and once after.  Only event timestamps are normalised.  The greeting differs in nothing but, possibly, the
point release (docs/differences.md: ``qemu-point-release``).
"""

from __future__ import annotations

import re

import pytest

from balloonlab.emulator import QEMU_VERSIONS
from tests.fixtures.emulator import RawClient, random_cases

pytestmark = pytest.mark.qemu

SYNC = b'\x01\n{"execute": "no-such-command", "id": "sync"}'
_TIMESTAMP = re.compile(rb'"seconds": \d+, "microseconds": \d+')

CASES = [
    b'{"execute": "query-status", "id": [1, {"a": 2.0}, "\\u00e9", 0.1, -0.0, 18446744073709551616]}',
    b'{"execute": "nope", "id": {"b": 1, "a": 2, "zz": [{"minor": 1, "micro": 2}], "execute": 4, "id": 5}}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["bogus"]}}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob", 1], "x": 1}}',
    b'{"exec": "x", "id": 7}', b'{"execute": 1}', b'{"execute": "query-status", "arguments": []}',
    b'{"execute": "query-status", "x": 1}', b'{"x": 1, "execute": 1}', b'{}', b'{"id": null}', b'[]', b'1 ',
    b'{"execute": "query-balloon", "arguments": {"x": 1}}', b'{"execute": "a", "execute": "b"}',
    b'{"execute": "no\xffpe"}', b'"\\uZZZZ"', b'"\\u12"', b'"\\uD800\\u0041"', b'"\\q"', b'"\xef\xbf\xbe"',
    b'True', b'abc ', b'%d', b'1.e5', b'{"a" 1}', b'{1: 2}', b'[1 2]', b'{"a": 1 "b": 2}',
    b'[' * 1025 + b']' * 1025, b'{"a":' * 1025 + b'1' + b'}' * 1025, b'[' * 1024 + b']' * 1024,
    b'{"execute": "query-status"}{"execute": "query-status", "id": 2}',
    b'{\n "execute":\n "query-balloon"\n}\n',
]


def conversation(path: str, cases: list[bytes], negotiate: bool) -> tuple[bytes, list[list[bytes]]]:
    with RawClient(path) as client:
        if negotiate:
            client.negotiate()
        answers = []
        for case in cases:
            client.send(case + SYNC)
            lines = []
            while b'"sync"' not in (line := client.line()):
                lines.append(_TIMESTAMP.sub(b"TIMESTAMP", line))
            answers.append(lines)
        return client.greeting, answers


@pytest.fixture
def pair(start_vm, emulator_socket):
    """(real QEMU's QMP socket, emulator's socket), both paused with -device virtio-balloon-pci,id=balloon0."""
    vm = start_vm(guest=False, paused=True, memory="512M", balloon_id="balloon0")
    version = ".".join(vm.qemu_version.split(".")[:2])
    if version not in QEMU_VERSIONS:
        pytest.skip(f"the emulator has no profile for this machine's QEMU {vm.qemu_version}")
    return vm.qmp_socket, emulator_socket(qemu_version=version, start_paused=True, ram_size=512 << 20)


def _point_release_free(greeting: bytes) -> bytes:
    return re.sub(rb'"micro": \d+|"package": "[^"]*"', b"X", greeting)


@pytest.mark.parametrize("negotiate", [False, True], ids=["before-negotiation", "negotiated"])
def test_protocol_answers_match_real_qemu_byte_for_byte(pair, negotiate):
    real_path, emu_path = pair
    cases = CASES + random_cases(seed=20240501, count=150)
    real_greeting, real = conversation(real_path, cases, negotiate)
    emu_greeting, emu = conversation(emu_path, cases, negotiate)
    assert _point_release_free(emu_greeting) == _point_release_free(real_greeting)
    differing = [(case, r, e) for case, r, e in zip(cases, real, emu) if r != e]
    assert not differing, "\n".join(f"{c[:120]!r}:\n  qemu {r[:3]}\n  emu  {e[:3]}" for c, r, e in differing[:5])


def test_quit_matches_real_qemu(pair):
    transcripts = []
    for path in pair:
        with RawClient(path) as client:
            client.negotiate()
            client.send(b'{"execute": "quit", "id": 1}')
            transcripts.append([_TIMESTAMP.sub(b"TIMESTAMP", line) for line in client.read_until_eof()])
    assert transcripts[0] == transcripts[1]
    assert transcripts[0][-1] == b'{"return": {}, "id": 1}\r\n'
