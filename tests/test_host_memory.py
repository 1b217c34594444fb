"""The host's side of one emulated VM (docs/qemu-behaviour.md, A3): RSS, free page reporting, inflation, deflate-on-oom.

Each test is one of A3's experiments on the emulator, on the virtual clock so that "within 2 s" is a clock
reading, not a race.  tests/test_differential_host.py runs the same experiments on real QEMU 7.2 and compares.
"""

from __future__ import annotations

import pytest

import balloonlab
from balloonlab.emulator.memory import REPORT_BLOCK
from tests.helpers import clean_loop  # noqa: F401  (autouse)

MiB = 1 << 20


@pytest.fixture
def make_lab():
    labs = []

    def make(**kw):
        kw.setdefault("memory", "512M")
        kw.setdefault("qemu_version", "7.2")
        lab = balloonlab.emulate(clock="virtual", **kw)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.close()


@pytest.mark.parametrize("prop, feature", [("free_page_reporting", "REPORTING"),
                                           ("deflate_on_oom", "DEFLATE_ON_OOM")])
@pytest.mark.parametrize("on", [False, True])
def test_device_properties_read_back_with_qom_get_and_switch_their_feature_bit(make_lab, prop, feature, on):
    lab = make_lab(**{prop: on}, qemu_version="10.0")
    assert lab.qmp("qom-get", path=lab.device_path, property=prop.replace("_", "-")) is on
    virtio = lab.virtio()
    assert virtio.offered(feature) is on and virtio.accepted(feature) is on
    status = lab.qmp("x-query-virtio-status", path=lab.device_path + "/virtio-backend")
    names = " ".join(status["host-features"]["dev-features"])
    assert (f"VIRTIO_BALLOON_F_{feature}" in names) is on


def test_device_properties_are_set_when_the_vm_is_made_not_later(make_lab):
    lab = make_lab(free_page_reporting=True)
    with pytest.raises(balloonlab.QMPError) as err:
        lab.qmp("qom-set", path=lab.device_path, property="free-page-reporting", value=False)
    assert err.value.error_class == "GenericError"
    assert lab.qmp("qom-get", path=lab.device_path, property="free-page-reporting") is True


def test_a_property_that_is_not_on_or_off_is_refused_with_the_choices(make_lab):
    with pytest.raises(balloonlab.EmulatorOptionError, match="True or False"):
        make_lab(free_page_reporting="yes")


def test_a_guest_that_touches_memory_raises_the_vms_rss_by_what_it_touched(make_lab):
    lab = make_lab()
    boot = lab.host_rss
    assert 190 * MiB <= boot <= 230 * MiB  # A3: 200-223 MiB after boot
    lab.guest("tmpfs", size="250M")
    assert lab.host_rss - boot == pytest.approx(250 * MiB, rel=0.05)


def test_freed_memory_stays_resident_without_free_page_reporting(make_lab):
    lab = make_lab()
    lab.guest("tmpfs", size="250M")
    filled = lab.host_rss
    lab.guest("tmpfs", size="0")
    lab.advance("16s")
    assert lab.host_rss == filled


def test_free_page_reporting_gives_freed_memory_back_after_two_seconds(make_lab):
    lab = make_lab(free_page_reporting=True)
    boot = lab.host_rss
    lab.guest("tmpfs", size="250M")
    filled = lab.host_rss
    lab.guest("tmpfs", size="0")
    lab.advance(1.9)
    assert lab.host_rss == filled  # the guest waits 2 s before it reports
    lab.advance(0.2)
    assert lab.host_rss == pytest.approx(boot, rel=0.10)
    assert (filled - lab.host_rss) % REPORT_BLOCK == 0


def test_inflating_gives_resident_free_pages_back_at_once_and_deflating_does_not_retake_them(make_lab):
    lab = make_lab()
    lab.guest("tmpfs", size="250M")
    lab.guest("tmpfs", size="0")
    before = lab.host_rss
    lab.set_target("200M")
    lab.advance(1)
    assert lab.actual == 200 * MiB
    dropped = before - lab.host_rss
    assert dropped == pytest.approx((459 - 199) * MiB, rel=0.15)  # A3: 459 -> 199 MiB
    low = lab.host_rss
    lab.set_target("512M")
    lab.advance(1)
    assert lab.actual == 512 * MiB
    assert lab.host_rss == pytest.approx(low, abs=MiB)  # not resident until the guest touches them
    lab.guest("allocate", size="100M")
    assert lab.host_rss - low == pytest.approx(100 * MiB, rel=0.05)


def _squeeze(lab):
    """A3's deflate-on-oom experiment: balloon at 160 MiB, then 200 MiB of tmpfs."""
    lab.set_target("160M")
    lab.advance(2)
    assert lab.actual == 160 * MiB
    lab.polling_interval = 1
    lab.guest("tmpfs", size="200M")
    lab.advance(2)
    return lab.stats()


def test_without_deflate_on_oom_the_guest_oom_kills_and_the_balloon_stays(make_lab):
    lab = make_lab(qemu_version="10.0")  # a 6.12 guest reports oom-kills
    stats = _squeeze(lab)
    assert stats["oom-kills"] == 1
    assert lab.actual == 160 * MiB
    assert lab.guest("status")["memory"]["tmpfs"] < 200 * MiB


def test_with_deflate_on_oom_the_guest_deflates_the_balloon_by_itself_and_survives(make_lab):
    lab = make_lab(qemu_version="10.0", deflate_on_oom=True)
    stats = _squeeze(lab)
    assert stats["oom-kills"] == 0
    assert lab.actual > 160 * MiB
    changes = [e["data"]["actual"] for e in lab.events if e["event"] == "BALLOON_CHANGE"]
    assert changes[-1] == lab.actual
    assert lab.guest("status")["memory"]["tmpfs"] == 200 * MiB


def test_an_oom_killed_workload_dies_and_its_memory_is_freed(make_lab):
    lab = make_lab(qemu_version="10.0")
    lab.polling_interval = 1
    lab.guest("allocate", size="900M", duration="10s")  # more than RAM plus the guest's swap
    lab.advance(12)
    stats = lab.stats()
    assert stats["oom-kills"] >= 1
    assert lab.guest("status")["memory"]["workloads"] == []


def test_the_command_line_spells_both_properties_as_qemu_does():
    from balloonlab.cli.emulate import parse_args

    opts = parse_args(["-device", "virtio-balloon-pci,free-page-reporting=on,deflate-on-oom=on"])
    (spec,) = opts.config.balloons
    assert spec.free_page_reporting and spec.deflate_on_oom


def test_a_lab_is_named_by_its_host_else_by_its_socket(make_lab, tmp_path):
    lab = make_lab()
    assert lab.name == "vm0"
    other = balloonlab.connect(lab.socket_path)
    try:
        assert other.name == "vm0"  # an emulator's private socket is "qmp.sock": no name in it
        assert other.host_rss == lab.host_rss  # an emulator says it over QMP, to any client
    finally:
        other.close()
    named = make_lab(socket_path=str(tmp_path / "100.qmp"))
    with balloonlab.connect(named.socket_path) as proxmox_style:
        assert proxmox_style.name == "100"
