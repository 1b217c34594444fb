"""``%balloon host``, ``%balloon fleet`` and ``%balloon use vmN`` in a real IPython shell."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

import balloonlab
from balloonlab.widgets.fleet import FleetPanel
from tests.helpers import clean_loop  # noqa: F401  (autouse)
from tests.test_magics import balloon, ip, magics_of  # noqa: F401  (ip: fixture)

MiB = 1 << 20


def test_host_starts_a_host_makes_it_current_and_shows_its_fleet(ip):
    panel = balloon(ip, "host --vms 4 --memory 3G --vm-memory 1G")
    magics = magics_of(ip)
    assert isinstance(panel, FleetPanel) and list(panel.rows) == ["vm0", "vm1", "vm2", "vm3"]
    assert magics.host is panel.host and magics.host.memory == 3 << 30
    assert magics.lab is magics.host["vm0"]


def test_use_makes_one_vm_current_so_every_single_vm_magic_works_on_it(ip):
    balloon(ip, "host --vms 3 --memory 2G --vm-memory 512M")
    host = magics_of(ip).host
    balloon(ip, "use vm2")
    assert magics_of(ip).lab is host["vm2"]
    balloon(ip, "target 256M")
    balloon(ip, "advance 2s")  # the whole host's clock
    assert host["vm2"].actual == 256 * MiB and host["vm1"].actual == 512 * MiB
    assert isinstance(balloon(ip, "stats"), balloonlab.GuestStats)


def test_use_suggests_the_nearest_vm_name(ip):
    balloon(ip, "host --vms 3")
    with pytest.raises(UsageError, match="did you mean 'vm2'"):
        balloon(ip, "use vm_2")


def test_fleet_needs_a_host_and_replaces_its_previous_panel(ip):
    with pytest.raises(UsageError, match="no host yet"):
        balloon(ip, "fleet")
    first = balloon(ip, "host --vms 2")
    second = balloon(ip, "fleet")
    assert first.closed and not second.closed


def test_a_new_host_closes_the_previous_one_and_unload_closes_the_last(ip):
    balloon(ip, "host --vms 2")
    first = magics_of(ip).host
    balloon(ip, "host --vms 2")
    second = magics_of(ip).host
    assert first.closed and not second.closed
    ip.run_line_magic("unload_ext", "balloonlab")
    assert second.closed


@pytest.mark.parametrize("line, message", [
    ("host --vms 0", "^%balloon host: --vms: at least one VM"),
    ("host --memory lots", "^%balloon host: .*not a size: 'lots'"),
    ("host --workloads sleepy", "^%balloon host: unknown workload 'sleepy'"),
])
def test_bad_host_options_are_one_line_usage_errors_and_start_nothing(ip, line, message):
    with pytest.raises(UsageError, match=message):
        balloon(ip, line)
    assert magics_of(ip).host is None
