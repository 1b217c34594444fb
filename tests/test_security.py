"""Security checks: private sockets, no network listeners, no code or shell built from user text.

A QMP socket is a root shell's worth of power over a VM (``quit``, ``system_reset``, ``qom-set``, ``balloon``),
so it must be reachable by its owner only, and nothing balloonlab starts may listen on the network.  The static
check at the end keeps ``eval``/``exec``/shell strings out of the package: everything balloonlab runs is an argv
list, and every text a user types is data.
"""

from __future__ import annotations

import ast
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import balloonlab
from balloonlab.errors import EmulatorOptionError

PACKAGE = Path(balloonlab.__file__).resolve().parent
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


# -- helpers: who listens where --------------------------------------------------------------------------------
def socket_inodes(pid: int) -> set[int]:
    """Inodes of every socket ``pid`` holds open (from /proc/PID/fd)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def tcp_listeners(pid: int) -> list[str]:
    """TCP/TCP6 sockets in LISTEN state that ``pid`` holds (``local address:port`` as /proc shows it)."""
    mine = socket_inodes(pid)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == LISTEN and inode in mine:
                found.append(f"{table}: {local}")
    return found


def udp_sockets(pid: int) -> list[str]:
    mine = socket_inodes(pid)
    found = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found += [f"{table}: {f[1]}" for f in (line.split() for line in lines) if int(f[9]) in mine]
    return found


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- the emulator's sockets ------------------------------------------------------------------------------------
def test_emulate_socket_is_private_and_removed():
    with balloonlab.emulate() as lab:
        path = Path(lab.socket_path)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert mode(path) == 0o600, oct(mode(path))
        assert mode(path.parent) == 0o700, oct(mode(path.parent))
        assert os.lstat(path.parent).st_uid == os.getuid()
    assert not path.exists() and not path.parent.exists(), "close() must remove the socket and its directory"


def test_explicit_socket_path_gets_mode_0600(tmp_path):
    sock = tmp_path / "vm.sock"
    old = os.umask(0)  # even with a permissive umask
    try:
        lab = balloonlab.emulate(socket_path=str(sock))
    finally:
        os.umask(old)
    try:
        assert mode(sock) == 0o600, oct(mode(sock))
    finally:
        lab.close()
    assert not sock.exists()


def test_emulator_refuses_to_replace_a_file_or_follow_a_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "qmp.sock"
    link.symlink_to(victim)
    with pytest.raises(EmulatorOptionError, match="not a socket"):
        balloonlab.emulate(socket_path=str(link))
    with pytest.raises(EmulatorOptionError, match="not a socket"):
        balloonlab.emulate(socket_path=str(victim))
    assert victim.read_text() == "keep me" and link.is_symlink()


def test_another_user_cannot_connect_to_the_emulator():
    """The 0600 socket (inside a 0700 directory) refuses a process of another uid."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a probe as another user")
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 to run the probe as 'nobody'")
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    sys.exit(13)\n"
             "print(s.recv(200)); sys.exit(0)\n")
    with balloonlab.emulate() as lab:
        out = subprocess.run([python, "-c", probe, lab.socket_path], user=65534, group=65534, cwd="/",
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 13, f"another user reached the QMP socket: {out.stdout!r} {out.stderr!r}"
        assert lab.stats() is not None  # the owner still can


def test_cli_emulate_socket_is_private():
    """`balloonlab emulate` without -qmp: a fresh private directory, printed on stdout, removed at exit."""
    proc = subprocess.Popen([sys.executable, "-m", "balloonlab", "emulate", "-m", "256"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        path = Path(line.split()[-1]) if line else None
        assert path is not None and path.name.endswith(".sock"), f"no socket path printed: {line!r}"
        assert mode(path) == 0o600 and mode(path.parent) == 0o700
        assert tcp_listeners(proc.pid) == [] and udp_sockets(proc.pid) == []
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    assert not path.exists() and not path.parent.exists()


# -- no network --------------------------------------------------------------------------------------------------
def test_emulate_opens_no_tcp_listener():
    before = tcp_listeners(os.getpid())
    labs = [balloonlab.emulate(), balloonlab.emulate(clock="virtual", id="balloon0")]
    try:
        for lab in labs:
            lab.polling_interval = 1
            lab.stats()
        assert tcp_listeners(os.getpid()) == before
    finally:
        for lab in labs:
            lab.close()
    assert tcp_listeners(os.getpid()) == before


@pytest.mark.qemu
def test_launch_opens_no_tcp_listener_and_keeps_sockets_private(qemu_binary):
    before = tcp_listeners(os.getpid())
    with balloonlab.launch(guest=False) as lab:
        qemu_pid = lab.vm.pid
        assert tcp_listeners(qemu_pid) == [], "QEMU listens on TCP (a -vnc, -spice, -gdb or tcp: chardev?)"
        assert udp_sockets(qemu_pid) == []
        assert tcp_listeners(os.getpid()) == before
        workdir = Path(lab.socket_path).parent
        assert mode(workdir) == 0o700, f"QEMU's sockets sit in {workdir} with mode {oct(mode(workdir))}"
        argv = " ".join(lab.vm.argv)
        for option in ("-vnc", "-spice", "-gdb", "tcp:", "telnet", "-netdev", "-nic"):
            assert option not in argv, f"{option} in QEMU's command line: {argv}"
    assert not workdir.exists()


# -- static: nothing executes user text --------------------------------------------------------------------------
#: Calls that run code or a shell: flagged wherever they appear.
FORBIDDEN_NAMES = {"eval", "exec", "compile", "__import__", "breakpoint"}
FORBIDDEN_ATTRS = {
    ("os", "system"), ("os", "popen"), ("os", "execl"), ("os", "execlp"), ("os", "execle"), ("os", "execv"),
    ("os", "execve"), ("os", "execvp"), ("os", "execvpe"), ("os", "spawnl"), ("os", "spawnv"),
    ("pickle", "load"), ("pickle", "loads"), ("marshal", "loads"), ("yaml", "load"), ("shelve", "open"),
    ("asyncio", "create_subprocess_shell"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
}
#: IPython shell methods that evaluate or run text as Python.
FORBIDDEN_METHODS = {"ev", "ex", "run_cell", "run_line_magic", "run_cell_magic", "system", "getoutput",
                     "safe_execfile", "run_code"}
#: Functions that start processes: their command must be an argv list, never a string.
PROCESS_CALLS = {("subprocess", "run"), ("subprocess", "Popen"), ("subprocess", "call"),
                 ("subprocess", "check_call"), ("subprocess", "check_output"), ("asyncio", "create_subprocess_exec")}

#: (file relative to the package, call as written) -> why it is fine.  Keep this short and justified.
ALLOWED: dict[tuple[str, str], str] = {
    ("__init__.py", "importlib.import_module"):
        "lazy attribute table: the module names are constants in _LAZY, never user text",
}


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _is_text(node: ast.AST) -> bool:
    return (isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))
            or (isinstance(node, ast.BinOp) and (_is_text(node.left) or _is_text(node.right))))


def findings(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, call as written, problem) for every risky call in one module."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func) or ""
        last2 = tuple(name.split(".")[-2:]) if "." in name else ()
        if name in FORBIDDEN_NAMES:
            out.append((node.lineno, name, "runs code"))
        elif last2 in FORBIDDEN_ATTRS:
            out.append((node.lineno, name, "runs a shell or unpickles"))
        elif "." in name and name.split(".")[-1] in FORBIDDEN_METHODS and "shell" in name:
            out.append((node.lineno, name, "makes IPython run text"))
        elif name in ("importlib.import_module", "import_module"):
            out.append((node.lineno, "importlib.import_module", "imports a computed module name"))
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                out.append((node.lineno, name, "shell=True"))
        if (last2 in PROCESS_CALLS or name in ("spawn", "self.popen")) and node.args and _is_text(node.args[0]):
            out.append((node.lineno, name, "command given as a string"))
    return out


def test_checker_catches_what_it_looks_for():
    """The static check must be able to fail: each pattern below is found."""
    source = ("eval(x)\nexec(code)\nos.system(cmd)\nsubprocess.run(f'ls {d}', shell=True)\n"
              "subprocess.Popen('ls ' + d)\nself.shell.run_cell(text)\npickle.loads(b)\n")
    problems = {p for _, _, p in findings(ast.parse(source))}
    assert problems == {"runs code", "runs a shell or unpickles", "shell=True", "command given as a string",
                        "makes IPython run text"}
    assert findings(ast.parse("subprocess.run(['ls', d], shell=False)\nvm.exec(command)\n")) == []


def test_no_code_execution_or_shell_on_user_text():
    problems = []
    used_allowances = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for line, call, problem in findings(ast.parse(path.read_text(), str(path))):
            if (rel, call) in ALLOWED:
                used_allowances.add((rel, call))
                continue
            problems.append(f"balloonlab/{rel}:{line}: {call}: {problem}")
    assert problems == [], "\n".join(problems)
    assert used_allowances == set(ALLOWED), f"stale allow-list entries: {set(ALLOWED) - used_allowances}"


def test_no_shell_scripts_built_on_the_host():
    """The only shell text balloonlab writes runs inside the guest (init.sh, vm.exec); nothing on the host
    invokes /bin/sh."""
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        for needle in ('"/bin/sh"', "'/bin/sh'", '"sh", "-c"', "'sh', '-c'", '"bash"', "'bash'"):
            assert needle not in text, f"balloonlab/{path.relative_to(PACKAGE)} runs a host shell ({needle})"
