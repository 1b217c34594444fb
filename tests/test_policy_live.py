"""Running a policy on real VMs: in the background, dry or applied, stopped by stop() or its duration.

The dry run is tested on a launched QEMU with the tiny guest (real QMP, real balloon driver); applying is tested on
an emulated lab on real time (the same client path, a VM that boots in milliseconds).
"""

from __future__ import annotations

import pytest

import balloonlab
from balloonlab.errors import PolicyError
from balloonlab.policy import FixedPolicy, LivePolicyRun, Policy, run
from tests.fixtures.ipython import ip  # noqa: F401  (fixture)
from tests.fixtures.qemu import guest_image, qemu_binary  # noqa: F401  (fixtures)
from tests.helpers import clean_loop, wait_until  # noqa: F401  (autouse)

MiB = 1 << 20


class Halve(Policy):
    """Asks for half of each VM at once; its own limit is 32 MiB per tick."""

    def decide(self, view):
        return {name: vm.ram // 2 for name, vm in view.vms.items() if vm.valid}

    def max_change(self, vm):
        return 32 * MiB


@pytest.mark.qemu
@pytest.mark.slow
def test_a_dry_run_on_a_launched_qemu_records_decisions_and_changes_nothing(guest_image, capsys):
    with balloonlab.launch(memory="512M", image=guest_image, timeout=30) as lab:
        result = run([lab], FixedPolicy("256M"), duration="5s", tick="1s", dry_run=True)
        assert isinstance(result, LivePolicyRun)
        result.wait(timeout=120)
        assert not result.running
        assert result.decisions and not any(d.applied for d in result.decisions)
        assert {d.vm for d in result.decisions} == {lab.name}
        assert all(d.target == 256 * MiB and d.before == 512 * MiB for d in result.decisions)
        assert lab.target is None and lab.actual == 512 * MiB
        assert result.score["ticks"] >= 3
        df = result.to_dataframe()
        assert (df["actual"] == 512 * MiB).all() and df["host_used"].gt(0).all()
    printed = capsys.readouterr().out
    assert f"{lab.name}: 512.0 MiB would go to 256.0 MiB" in printed


def test_an_applied_run_works_in_the_background_within_the_policys_limits_until_stopped():
    with balloonlab.emulate(memory="512M", clock="real") as lab:
        result = run([lab], Halve(), duration=None, tick="0.2s")
        assert result.running  # returned at once
        assert wait_until(lambda: len(result.decisions) >= 3, timeout=30)
        result.stop()
        assert not result.running
        for d in result.decisions:
            assert d.applied and d.asked == 256 * MiB
            assert d.target == max(256 * MiB, d.before - 32 * MiB)
        assert lab.target == result.decisions[-1].target
        assert "Halve (applying, tick 0.2 s): stopped" in result.status()


class Broken(Policy):
    def decide(self, view):
        return {"nope": 1}


def test_a_live_run_stopped_by_its_policy_keeps_the_error_for_wait_and_status():
    with balloonlab.emulate(memory="512M", clock="real") as lab:
        result = run([lab], Broken(), duration=None, tick="0.2s")
        with pytest.raises(PolicyError, match="'nope'"):
            result.wait(timeout=30, show=False)
        assert not result.running
        assert "stopped: Broken.decide() set a target for 'nope' at tick 0" in result.status()


class Crashing(Halve):
    """A policy with a bug outside decide() (which the engine guards): its limit divides by zero."""

    def max_change(self, vm):
        return vm.ram // 0


def test_a_live_run_stopped_by_any_error_keeps_it_for_wait_and_status_and_prints_no_traceback(monkeypatch):
    import threading

    escaped: list = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)  # where a dying thread's traceback would go
    with balloonlab.emulate(memory="512M", clock="real") as lab:
        result = run([lab], Crashing(), duration=None, tick="0.2s")
        with pytest.raises(ZeroDivisionError):
            result.wait(timeout=30, show=False)
        assert not result.running
        assert escaped == []
        assert "stopped: ZeroDivisionError: integer division or modulo by zero" in result.status()


# --- %balloon policy ----------------------------------------------------------------------------------------------

def test_balloon_policy_starts_reports_and_stops_a_background_dry_run(ip, capsys):
    lab = ip.run_line_magic("balloon", "emulate --memory 512M")
    ip.user_ns["halve"] = Halve()
    result = ip.run_line_magic("balloon", "policy start halve --tick 0.2s")
    assert result.running and result.dry_run
    assert "Halve runs every 200 ms in the background (dry run" in capsys.readouterr().out
    assert wait_until(lambda: result.decisions, timeout=30)
    ip.run_line_magic("balloon", "policy status")
    assert "Halve (dry run, tick 0.2 s): running" in capsys.readouterr().out
    ip.run_line_magic("balloon", "policy stop")
    assert not result.running
    assert "would go to" in capsys.readouterr().out
    assert lab.target is None


def test_balloon_policy_refuses_bad_input_in_one_line(ip):
    from IPython.core.error import UsageError

    ip.run_line_magic("balloon", "emulate")
    with pytest.raises(UsageError, match="'nothing' is not mom, proxmox, none nor a variable"):
        ip.run_line_magic("balloon", "policy start nothing")
    with pytest.raises(UsageError, match="--tick must be more than 0 s"):
        ip.run_line_magic("balloon", "policy start mom --tick 0")
    with pytest.raises(UsageError):
        ip.run_line_magic("balloon", "policy begin")


def test_unloading_the_extension_stops_a_running_policy(ip):
    ip.run_line_magic("balloon", "emulate")
    result = ip.run_line_magic("balloon", "policy start mom --apply --tick 0.5s")
    assert result.running and not result.dry_run
    ip.run_line_magic("unload_ext", "balloonlab")
    assert not result.running


def test_ctrl_c_in_wait_stops_a_live_run_and_keeps_what_it_recorded():
    import _thread
    import threading

    with balloonlab.emulate(memory="512M", clock="real") as lab:
        result = run([lab], Halve(), duration=None, tick="0.2s", dry_run=True)
        assert wait_until(lambda: result.score["ticks"] >= 2, timeout=30)
        threading.Timer(0.3, _thread.interrupt_main).start()  # what Ctrl-C does to the waiting thread
        result.wait(timeout=30, show=False)
        assert result.interrupted and not result.running
        assert result.score["ticks"] >= 2


def test_balloon_policy_on_the_current_virtual_host_simulates_and_returns_the_scored_run(ip, capsys):
    from balloonlab.policy import PolicyRun

    ip.run_line_magic("balloon", "host --vms 2 --memory 1G --vm-memory 1G --workloads steady")
    result = ip.run_line_magic("balloon", "policy start mom --apply --duration 30m")
    assert type(result) is PolicyRun and not result.dry_run
    assert result.score["ticks"] == 180
    assert set(result.to_dataframe()["vm"]) == {"vm0", "vm1"}
    assert result.decisions and all(d.applied for d in result.decisions)
    ip.run_line_magic("balloon", "policy status")
    assert "no policy has run on real time in this shell" in capsys.readouterr().out
