"""The allow-list: every difference between the emulator and real QEMU that is a documented choice.

Each entry has an id that is a heading in ``docs/differences.md`` (a test checks entries both ways, with
:data:`UNOBSERVED`, the documented differences no conversation can show), a one-line summary,
and a normaliser that rewrites both sides' observations of a step so that, if this difference is the only one,
they compare equal.  A step opts in by listing the id in its ``allow``; nothing is ever skipped silently: the
test report names every difference a passing conversation relied on.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Callable

from .conversation import Observation


def _same(x: Any) -> Any:
    return x


@dataclass(frozen=True)
class Difference:
    """One documented difference: its id (a heading in docs/differences.md), what it is, and how to see past it."""

    id: str
    summary: str
    #: applied to every reply of the step on both sides (None: drop the reply)
    normalise: Callable[[dict], dict | None] = _same
    #: applied to what a non-reply step observed (Observation.value) on both sides
    normalise_value: Callable[[Any], Any] = _same
    #: applied to the step's events on both sides
    normalise_events: Callable[[list[dict]], list[dict]] = _same
    #: applied to the step's whole list of (normalised) replies on both sides
    normalise_replies: Callable[[list[dict]], list[dict]] = _same
    #: the emulator profiles (QEMU versions) it may be used for; None: all
    versions: tuple[str, ...] | None = None
    #: applied to the step's two observations together, for a difference that is one exact answer on each side
    normalise_pair: Callable[[Observation, Observation], tuple[Observation, Observation]] = lambda r, e: (r, e)

    def applies_to(self, version: str | None) -> bool:
        return self.versions is None or version in self.versions

    def apply(self, real: Observation, emu: Observation) -> tuple[Observation, Observation]:
        def fix(o: Observation) -> Observation:
            replies = [self.normalise(copy.deepcopy(r)) for r in o.replies]
            return replace(o, replies=self.normalise_replies([r for r in replies if r is not None]),
                           value=self.normalise_value(copy.deepcopy(o.value)),
                           events=self.normalise_events(copy.deepcopy(o.events)))
        return self.normalise_pair(fix(real), fix(emu))


def _version_blank(reply: dict) -> dict:
    """Blank the point release: keep major and minor, drop micro and the distribution's package string."""
    version = reply.get("QMP", {}).get("version") or reply.get("return")
    if isinstance(version, dict) and "qemu" in version and "package" in version:
        version["qemu"]["micro"] = "*"
        version["package"] = "*"
    return reply


def _resolved_or_not_found(reply: dict) -> dict:
    """A QOM path outside the balloon's objects: a value (QEMU) and DeviceNotFound (emulator) read the same."""
    if "return" in reply or reply.get("error", {}).get("class") == "DeviceNotFound":
        return {"qom-path-outside-the-balloon": "resolved or not found"}
    return reply


FIRMWARE_RESET = ("RESET", {"guest": True, "reason": "guest-reset"})


def _one_firmware_reset(events: list[dict]) -> list[dict]:
    """Collapse a run of firmware RESET {"guest": true, "reason": "guest-reset"} events into the first one."""
    out: list[dict] = []
    for e in events:
        if (e.get("event"), e.get("data")) == FIRMWARE_RESET and out and \
                (out[-1].get("event"), out[-1].get("data")) == FIRMWARE_RESET:
            continue
        out.append(e)
    return out


#: The balloon-specific properties of virtio-balloon-pci and its backend (spec A), the containers the balloon lives
#: in, and ``type``: the part of a QOM listing every profile of the emulator must get exactly right.
BALLOON_QOM = frozenset({
    "type", "guest-stats", "guest-stats-polling-interval", "deflate-on-oom", "free-page-hint",
    "free-page-reporting", "page-poison", "qemu-4-0-config-size", "iothread", "virtio-backend",
    "peripheral", "peripheral-anon",
})


def _balloon_qom_subset(reply: dict) -> dict | None:
    """qom-list: keep the BALLOON_QOM entries, sorted by name; a QomWalk record of another property: dropped."""
    props = reply.get("return")
    if isinstance(props, list) and all(isinstance(p, dict) and "name" in p for p in props):
        reply["return"] = sorted((p for p in props if p["name"] in BALLOON_QOM), key=lambda p: p["name"])
    elif "property" in reply and reply["property"] not in BALLOON_QOM:
        return None
    return reply


def _walk_records_by_name(replies: list[dict]) -> list[dict]:
    """A QomWalk's per-property records in name order (the listing's order is itself compared, in the subset)."""
    records = sorted((r for r in replies if "property" in r), key=lambda r: r["property"])
    return [r for r in replies if "property" not in r] + records


#: What each side answers about an unplug, exactly: (QEMU's reply, the emulator's reply) for qom-set realized false,
#: then for the qom-get of realized after it.
UNPLUG_ANSWERS = (
    ({"return": {}}, {"error": {"class": "GenericError",
                                "desc": "balloonlab emulator: unrealizing (unplugging) a device is not modelled"}}),
    ({"return": False}, {"return": True}),
)


def _unplug_outcome(real: Observation, emu: Observation) -> tuple[Observation, Observation]:
    """The step passes only when QEMU unplugged and the emulator refused, each in exactly its own words."""
    if [real.replies, emu.replies] in [[[r], [e]] for r, e in UNPLUG_ANSWERS]:
        same = [{"realized": "QEMU unplugged the device, the emulator refused as documented"}]
        return replace(real, replies=same), replace(emu, replies=same)
    return real, emu


#: Prefix of the emulator's own QMP commands (a documented choice of the emulator: docs/emulator.md).
VENDOR_PREFIX = "x-balloonlab-"


def _modelled_commands(reply: dict) -> dict:
    """Keep the query-commands entries the emulator implements (minus its vendor commands), sorted by name.

    The set comes from the emulator's own command table, so a command it lists that real QEMU does not have
    still shows as a mismatch (real QEMU's filtered list lacks it)."""
    from balloonlab.emulator.commands import COMMANDS

    modelled = ({"qmp_capabilities"} | set(COMMANDS)) - {n for n in COMMANDS if n.startswith(VENDOR_PREFIX)}
    names = reply.get("return")
    if isinstance(names, list):
        reply["return"] = sorted((c for c in names if c.get("name") in modelled), key=lambda c: c["name"])
    return reply


DIFFERENCES: dict[str, Difference] = {d.id: d for d in (
    Difference("qemu-point-release",
               "the emulator's 7.2 profile greets as the Debian 7.2.22 build of spec A; another 7.2 build differs "
               "in micro and package only",
               _version_blank),
    Difference("concurrent-clients",
               "QEMU serves one client per QMP socket (a second one waits, ungreeted, until the first leaves); "
               "the emulator greets and serves every client at once",
               normalise_value=lambda v: {**v, "greeted": "*"} if isinstance(v, dict) and "greeted" in v else v),
    Difference("firmware-resets",
               "after a machine reset, real QEMU's firmware resets the machine again one or two times (timing-"
               "dependent RESET guest-reset events); the emulator sends exactly one",
               normalise_events=_one_firmware_reset),
    Difference("qom-listing-newer-qemu",
               "QEMU 9.2/10.0 list more generic PCI/virtio properties (in_order, vectors, msix-*, busnr, ...) and "
               "retype some (addr: str, rombar: int32); the emulator's newer profiles keep 7.2's listing",
               _balloon_qom_subset, normalise_replies=_walk_records_by_name, versions=("9.2", "10.0")),
    Difference("qom-skeleton",
               "outside the balloon's objects the emulator's QOM tree is a skeleton: partial paths that QEMU "
               "resolves inside /machine/unattached (e.g. 'device[0]') are DeviceNotFound",
               _resolved_or_not_found),
    Difference("unplug-not-modelled",
               "qom-set realized false on the balloon: QEMU unrealizes (unplugs) the device and answers {}; the "
               "emulator refuses with a GenericError saying it is not modelled",
               normalise_pair=_unplug_outcome),
    Difference("query-commands-subset",
               "query-commands: the emulator lists the commands it implements (about 15 of QEMU's ~200) plus its "
               "x-balloonlab-* vendor commands",
               _modelled_commands),
    Difference("legacy-balloon-option",
               "`-balloon virtio` (QEMU's old stats doc): QEMU 7.2 refuses it ('-balloon: invalid option'), "
               "`balloonlab emulate` accepts it and places the device at /machine/peripheral-anon/device[1] "
               "(checked by test_differential_cmdline.py, not by a conversation)"),
)}


#: Documented differences no conversation can show, each with what checks it instead (docs/differences.md, second
#: group).  Together with DIFFERENCES they are every entry of that list.
UNOBSERVED: dict[str, str] = {
    "no-iothread": "tests/test_differential_cmdline.py: both refuse free-page-hint=on without an iothread, in "
                   "QEMU's words; the emulator refuses iothread= itself (tests/test_emulate_cli.py)",
    "emulated-boot-time": "tests/test_emulator_device.py pins the 1 s boot; conversations wait with deadlines",
    "profile-9.2-chosen": "no QEMU 9.2 here: the emulator's unit tests pin the chosen profile",
}
