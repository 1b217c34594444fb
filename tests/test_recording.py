"""Recordings: record an emulated and a live QEMU session, replay both, compare report by report; bad files;
a recorder whose disk fills; the shipped recordings of real QEMU; the magic and the command line."""

from __future__ import annotations

import gzip
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import balloonlab
from balloonlab.client.recordfile import Recording, read_recording
from balloonlab.client.shipped import CATALOGUE
from balloonlab.errors import BalloonError, RecordingError
from tests.fixtures.qemu import guest_image, qemu_binary  # noqa: F401  (fixtures)
from tests.helpers import clean_loop, wait_for  # noqa: F401  (autouse fixture)
from tests.test_magics import ip  # noqa: F401  (an InteractiveShell with balloonlab loaded)

MiB = 1 << 20


# --------------------------------------------------------------------------------------------------------------
# helpers


def replayed(rec: Recording, interval: int | None = None) -> tuple[list[dict], list[dict], Any]:
    """Replay ``rec`` on the virtual clock past its end (polled every ``interval`` s instead of the recorded
    interval, if given); (the reports it produced, its events, the replay guest's status)."""
    lab = balloonlab.replay(rec.path)
    try:
        seen: list[dict] = []
        lab.subscribe(lambda u: seen.append(u.stats.raw) if u.kind == "stats" else None)
        if interval is not None:
            lab.polling_interval = interval
        lab.advance(rec.duration + 5)
        return seen, lab.events, lab.guest("status")
    finally:
        lab.close()


def after_initial(rec: Recording, reports: list[dict]) -> list[dict]:
    """The replayed reports after the starting one (which a subscriber sees only if no report came before it)."""
    initial = next(r.raw for r in rec.reports if r.initial)
    return reports[1:] if reports and reports[0] == initial else reports


def later_reports(rec: Recording) -> list[dict]:
    return [r.raw for r in rec.reports if not r.initial]


def balloon_changes(events: list[dict]) -> list[tuple[int, int, int]]:
    return [(e["timestamp"]["seconds"], e["timestamp"]["microseconds"], e["data"]["actual"])
            for e in events if e["event"] == "BALLOON_CHANGE"]


def assert_replays_report_by_report(rec: Recording) -> None:
    reports, events, status = replayed(rec)
    recorded = later_reports(rec)
    assert recorded, "the recording holds no reports to compare"
    # The replay starts from the report the device held when recording began; after it, every recorded report,
    # stats and last-update second alike, in order, none skipped, none invented.
    assert after_initial(rec, reports) == recorded
    assert status["skipped"] == 0 and status["played"] == len(recorded)
    assert balloon_changes(events) == balloon_changes([e["event"] for e in rec.events])


# --------------------------------------------------------------------------------------------------------------
# emulated and live sessions, recorded and replayed


def test_an_emulated_session_replays_report_by_report(tmp_path):
    path = tmp_path / "emulated.blab.gz"
    with balloonlab.emulate(clock="virtual", id="balloon0") as lab:
        lab.polling_interval = 2
        rec = lab.record(path, description="allocate, inflate, poll faster")
        lab.guest("allocate", size="100M", duration="20s")
        lab.advance("30s")
        lab.set_target("300M")
        lab.advance("20s")
        lab.polling_interval = 1
        lab.advance("15s")
        rec.stop()
    recording = read_recording(path)
    assert recording.header["qemu"].startswith("10.0.")
    assert recording.header["device"]["path"] == "/machine/peripheral/balloon0"
    assert recording.targets and recording.intervals and recording.end["reason"] == "stopped"
    assert_replays_report_by_report(recording)


def test_a_recorded_virtual_advance_keeps_its_reports_not_the_report_log(tmp_path):
    """An advance replays its reports from x-balloonlab-reports (thousands of them in base64 rows): the recording
    keeps each report as a stats record and only a summary of the log's replies."""
    path = tmp_path / "day.blab"
    with balloonlab.emulate(clock="virtual") as lab:
        lab.polling_interval = 1
        rec = lab.record(path)
        lab.advance("1h")
        rec.stop()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    logs = [r for r in lines if r.get("execute") == "x-balloonlab-reports" and "return" in r]
    assert logs and all(r.get("summarized") and set(r["return"]) == {"first", "next"} for r in logs)
    assert len(read_recording(path).reports) >= 3500  # a report a second, each one kept


@pytest.mark.qemu
@pytest.mark.timeout(240)
def test_a_live_qemu_session_replays_report_by_report(tmp_path, guest_image):
    path = tmp_path / "live.blab"
    with balloonlab.launch(memory="512M", image=guest_image) as lab:
        lab.polling_interval = 1
        wait_for(lambda: lab.stats().last_update is not None, "the guest's first report")
        rec = lab.record(path)
        wait_for(lambda: rec.reports >= 4, "four reports", timeout=60)
        lab.guest_exec("dd if=/dev/zero of=fill bs=1M count=60 2>/dev/null")
        lab.set_target("384M")
        wait_for(lambda: lab.actual == 384 * MiB, "the balloon at 384M", timeout=60)
        wait_for(lambda: rec.reports >= 12, "twelve reports", timeout=60)
        rec.stop()
    recording = read_recording(path)
    assert recording.header["backend"] == "live" and recording.header["qemu"].startswith("7.2")
    assert recording.exchanges > 0 and any(r.host_rss for r in recording.reports)
    assert balloon_changes([e["event"] for e in recording.events]), "inflating raised no BALLOON_CHANGE"
    assert_replays_report_by_report(recording)


def test_a_recording_begun_before_the_boot_report_replays_it_as_the_boot_report(tmp_path):
    path = tmp_path / "boot.blab"
    with balloonlab.emulate(clock="virtual", paused=True) as lab:
        lab.polling_interval = 2
        rec = lab.record(path)
        lab.qmp("cont")
        lab.advance("20s")
        rec.stop()
    recording = read_recording(path)
    assert recording.reports[0].initial and recording.reports[0].last_update == 0
    assert [e["event"]["event"] for e in recording.events] == ["RESUME"]
    assert_replays_report_by_report(recording)


def test_lab_close_ends_the_recording_and_every_exchange_is_in_it(tmp_path):
    path = tmp_path / "closed.blab"
    lab = balloonlab.emulate(clock="virtual")
    rec = lab.record(path)
    lab.qmp("qom-list", path="/machine/peripheral-anon")
    with pytest.raises(BalloonError):
        lab.qmp("qom-get", path="/machine/peripheral-anon/device[1]", property="nope")
    lab.close()
    assert rec.state == "stopped" and lab.recorders == []
    records = [json.loads(line) for line in path.read_text().splitlines()[1:]]
    exchanges = [r for r in records if r["kind"] == "qmp"]
    assert any(r["execute"] == "qom-list" and isinstance(r["return"], list) for r in exchanges)
    error = next(r for r in exchanges if r["execute"] == "qom-get" and "error" in r)
    assert error["error"] == {"class": "GenericError", "desc": "Property 'virtio-balloon-pci.nope' not found"}
    assert records[-1]["kind"] == "end" and records[-1]["reason"] == "lab closed"


# --------------------------------------------------------------------------------------------------------------
# replaying at another interval, and on the real clock


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Recording:
    """Two minutes of an emulated guest at a 2 s interval, with a workload."""
    path = tmp_path_factory.mktemp("rec") / "session.blab.gz"
    with balloonlab.emulate(clock="virtual", id="balloon0") as lab:
        lab.polling_interval = 2
        rec = lab.record(path)
        lab.guest("allocate", size="200M", duration="90s")
        lab.advance("120s")
        rec.stop()
    return read_recording(path)


def test_replayed_slower_it_skips_reports_and_never_invents_one(session):
    seen, _, status = replayed(session, interval=5)
    recorded = later_reports(session)
    assert status["skipped"] > 0 and 0 < status["played"] < len(recorded)
    played = after_initial(session, seen)
    assert played and all(raw in recorded for raw in played)  # each one a recorded report, at its own second
    assert [r["last-update"] for r in played] == sorted(r["last-update"] for r in played)


def test_replayed_faster_reports_come_at_the_recorded_pace(session):
    seen, _, status = replayed(session, interval=1)
    assert after_initial(session, seen) == later_reports(session) and status["skipped"] == 0


@pytest.mark.timeout(60)
def test_speed_ten_on_the_real_clock_plays_the_whole_session(session):
    lab = balloonlab.replay(session.path, clock="real", speed=10)
    try:
        wait_for(lambda: lab.guest("status")["next-report"] is None, "the last report", timeout=40)
        assert lab.stats().raw == later_reports(session)[-1]
    finally:
        lab.close()


def test_speed_needs_the_real_clock(session):
    with pytest.raises(balloonlab.InvalidValueError, match="speed applies to clock='real'"):
        balloonlab.replay(session.path, speed=10)


def test_the_memory_curve_follows_the_reports(session):
    curve = list(session.memory_curve())
    assert len(curve) == len(session.reports)
    assert curve[-1][1] - curve[0][1] > 150 * MiB  # the 200M allocation


def test_a_shipped_recording_gives_a_real_guests_memory_curve():
    from balloonlab.client.replay import memory_curve

    curve = list(memory_curve("tmpfs-fill-7.2"))
    used = [u for _, u in curve]
    assert [t for t, _ in curve] == sorted(t for t, _ in curve)
    assert max(used) - used[0] > 180 * MiB and used[-1] - used[0] < 20 * MiB  # 200 MiB in tmpfs, then removed


# --------------------------------------------------------------------------------------------------------------
# bad files


def write_lines(path: Path, lines: list[str], compress: bool = False) -> Path:
    data = "".join(lines).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def session_lines(session: Recording) -> list[str]:
    with gzip.open(session.path, "rt") as f:
        return f.readlines()


def test_an_empty_file_is_an_error_naming_the_file_and_line(tmp_path):
    path = write_lines(tmp_path / "empty.blab", [])
    with pytest.raises(RecordingError, match=rf"^{path}: line 1: the file is empty"):
        balloonlab.replay(path)


def test_a_file_truncated_in_its_header_is_an_error(tmp_path, session):
    path = write_lines(tmp_path / "cut.blab", [session_lines(session)[0][:40]])
    with pytest.raises(RecordingError, match=rf"^{path}: line 1: the file is truncated inside its header"):
        read_recording(path)


def test_another_format_version_is_an_error(tmp_path, session):
    lines = session_lines(session)
    header = json.loads(lines[0])
    header["version"] = 2
    path = write_lines(tmp_path / "v2.blab", [json.dumps(header) + "\n", *lines[1:]])
    with pytest.raises(RecordingError, match=rf"^{path}: line 1: format version 2; this balloonlab reads version 1"):
        balloonlab.replay(path)


def test_a_file_that_is_not_a_recording_is_an_error(tmp_path):
    path = write_lines(tmp_path / "notes.blab", ['{"hello": "world"}\n'])
    with pytest.raises(RecordingError, match=rf"^{path}: line 1: not a balloonlab recording"):
        read_recording(path)


def test_a_corrupt_line_in_the_middle_is_an_error_naming_its_line(tmp_path, session):
    lines = session_lines(session)
    lines[5] = '{"kind": "stats", "t": 1, "vm"\n'
    path = write_lines(tmp_path / "corrupt.blab.gz", lines, compress=True)
    with pytest.raises(RecordingError, match=rf"^{path}: line 6: corrupt record, not JSON"):
        balloonlab.replay(path)


def test_a_corrupt_gzip_stream_is_an_error(tmp_path, session):
    data = bytearray(Path(session.path).read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    path = tmp_path / "bad.blab.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match=rf"^{path}: line \d+: "):
        read_recording(path)


def test_a_recording_cut_off_by_a_crash_replays_up_to_its_last_complete_line(tmp_path, session):
    lines = session_lines(session)
    cut = len(lines) // 2
    path = write_lines(tmp_path / "crash.blab", [*lines[:cut], lines[cut][:25]])
    rec = read_recording(path)
    assert rec.cut_off and rec.end is None and rec.lines == cut
    complete = [json.loads(line) for line in lines[1:cut]]
    assert [r.raw for r in rec.reports] == [r["raw"] for r in complete if r["kind"] == "stats"]
    reports, _, status = replayed(rec)
    assert after_initial(rec, reports) == later_reports(rec) and status["next-report"] is None


def test_a_gzip_stream_cut_off_by_a_crash_replays_what_it_holds(tmp_path, session):
    data = Path(session.path).read_bytes()
    path = tmp_path / "crash.blab.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    rec = read_recording(path)
    assert rec.cut_off and 0 < len(rec.reports) < len(session.reports)
    assert [r.raw for r in rec.reports] == [r.raw for r in session.reports[: len(rec.reports)]]


def test_a_missing_file_or_unknown_name_says_what_is_shipped(tmp_path):
    with pytest.raises(RecordingError, match="no-such-session: no such file, nor a shipped recording"):
        balloonlab.replay("no-such-session")
    with pytest.raises(RecordingError, match="cannot open the recording"):
        balloonlab.replay(tmp_path / "missing.blab")


# --------------------------------------------------------------------------------------------------------------
# a full disk


@pytest.fixture
def file_size_limit() -> Iterator[Callable[[int | None], None]]:
    """``limit(bytes)``: from now on no file of this process may grow past that (RLIMIT_FSIZE): a write beyond it
    fails as on a full disk (EFBIG; Python ignores SIGXFSZ).  ``limit(None)`` lifts it again.

    The limit holds for every file the process writes, pytest's own report too when its output goes to a file (as
    in CI), so a test lifts it as soon as the recorder has hit it; teardown lifts it in any case."""
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    yield lambda size: resource.setrlimit(resource.RLIMIT_FSIZE, before if size is None else (size, before[1]))
    resource.setrlimit(resource.RLIMIT_FSIZE, before)


def test_a_recorder_whose_disk_fills_stops_says_so_once_and_the_lab_goes_on(tmp_path, caplog, file_size_limit):
    path = tmp_path / "full.blab"
    with balloonlab.emulate() as lab:
        lab.polling_interval = 1
        rec = lab.record(path)
        file_size_limit(path.stat().st_size + 4096)
        try:
            wait_for(lambda: lab.stats() and rec.state == "failed", "the recorder to hit the limit", timeout=30)
        finally:
            file_size_limit(None)
        assert rec.error.startswith(f"recording to {path} stopped after ") and "the lab goes on" in rec.error
        assert "File too large" in rec.error
        errors = [r for r in caplog.records if r.name == "balloonlab.recording" and r.levelname == "ERROR"]
        assert len(errors) == 1
        before = lab.stats().last_update_seconds
        wait_for(lambda: lab.stats().last_update_seconds > before, "a new report after the failure")
        assert repr(rec).startswith("<Recorder recording FAILED: ")
        rec.stop()  # idempotent on a failed recorder
        assert rec.state == "failed"
    assert read_recording(path).end is None  # what reached the disk still reads, without an end


def test_a_recording_that_cannot_be_created_is_an_error_at_once():
    with balloonlab.emulate() as lab:
        with pytest.raises(RecordingError, match=r"^/dev/full: cannot write the recording: No space left on device"):
            lab.record("/dev/full")
        with pytest.raises(RecordingError, match="cannot write the recording"):
            lab.record("/nonexistent-dir/x.blab")
        assert lab.recorders == [] and lab.stats().reported


# --------------------------------------------------------------------------------------------------------------
# the shipped recordings of real QEMU


def test_the_shipped_recordings_are_listed_with_a_line_each_and_come_from_real_qemu():
    shipped = balloonlab.recordings()
    assert len(shipped) >= 4
    total = 0
    for item in shipped:
        assert item.description and "\n" not in item.description
        rec = read_recording(item.path)
        assert rec.header["backend"] == "live" and rec.header["qemu"].split(".")[:2] in (["7", "2"], ["10", "0"])
        assert item.name.endswith(".".join(rec.header["qemu"].split(".")[:2]))
        assert rec.end is not None and len(rec.reports) > 30 and rec.marks
        total += item.path.stat().st_size
    assert total < 400_000
    props = {r.name: read_recording(r.path).header["device"]["properties"] for r in shipped}
    assert props["tmpfs-fill-fpr-7.2"]["free-page-reporting"] is True  # as QEMU answered qom-get
    assert props["tmpfs-fill-7.2"]["free-page-reporting"] is False
    assert props["deflate-on-oom-7.2"]["deflate-on-oom"] is True


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_a_shipped_recording_replays_report_by_report(name):
    assert_replays_report_by_report(read_recording(balloonlab.client.shipped.shipped_path(name)))


# --------------------------------------------------------------------------------------------------------------
# the magic and the command line


def test_the_magic_records_the_current_lab_and_stops(tmp_path, ip):
    from IPython.core.error import UsageError

    path = tmp_path / "magic.blab"
    ip.run_line_magic("balloon", "emulate --clock virtual")
    ip.run_line_magic("balloon", "poll 2")
    ip.run_line_magic("balloon", f"record {path}")
    ip.run_line_magic("balloon", "advance 20s")
    assert ip.run_line_magic("balloon", "info").recording.startswith(f"recording {path}: ")
    with pytest.raises(UsageError, match="give a FILE to start recording, or --stop, not both"):
        ip.run_line_magic("balloon", f"record {path} --stop")
    ip.run_line_magic("balloon", "record --stop")
    rec = read_recording(path)
    assert rec.end["reason"] == "stopped" and len(rec.reports) >= 10
    lab = ip.run_line_magic("balloon", f"replay {path}")
    assert lab.stats().raw in [r.raw for r in rec.reports[:2]]  # the start, or the first report at once
    with pytest.raises(UsageError, match="--speed needs --clock real"):
        ip.run_line_magic("balloon", f"replay {path} --speed 10")


@pytest.mark.timeout(60)
def test_balloonlab_record_attaches_to_a_socket_for_a_duration(tmp_path):
    sock = tmp_path / "qmp.sock"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    emulator = subprocess.Popen([sys.executable, "-m", "balloonlab", "emulate", "-qmp",
                                 f"unix:{sock},server=on,wait=off", "-device", "virtio-balloon-pci,id=balloon0"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(sock.exists, "the emulator's socket")
        out = tmp_path / "cli.blab.gz"
        done = subprocess.run([sys.executable, "-m", "balloonlab", "record", str(sock), "-o", str(out),
                               "--duration", "4s", "--interval", "1"], env=env, capture_output=True, text=True,
                              timeout=45)
        assert done.returncode == 0, done.stderr
        assert f"to {out} for 4 s" in done.stdout and "reports" in done.stdout
        rec = read_recording(out)
        assert rec.header["interval"] == 1 and rec.header["backend"] == "connected" and len(rec.reports) >= 2
        assert_replays_report_by_report(rec)  # a real-clock recording replays as exactly as a virtual one
        bad = subprocess.run([sys.executable, "-m", "balloonlab", "record", str(sock), "-o", str(out),
                              "--duration", "soon"], env=env, capture_output=True, text=True, timeout=30)
        assert bad.returncode == 2 and "argument --duration" in bad.stderr
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
