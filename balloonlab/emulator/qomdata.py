"""QOM property listings as a real QEMU 7.2 answers ``qom-list`` (observed on Debian's 1:7.2+dfsg-7+deb12u18 with
``-nodefaults -S -device virtio-balloon-pci,id=balloon0``): names, types, values and order.

Each row is ``(name, type, value, kind)``.  ``kind`` says how machine.py builds it:

* ``"static"``: a ``-device``/machine property with a fixed value (refuses qom-set once realized);
* ``"ro"``: read-only (``type``, ``legacy-addr``...); ``"runtime"``: realized/hotplugged/hotpluggable;
* ``"link"``: a ``link<...>`` whose value is a path; ``"unreadable"``: listed but ``not readable``;
* ``"mr"``: a ``child<memory-region>`` (an object with only ``type`` here);
* ``"alias"``: on the PCI proxy, forwarded to the same name on the ``virtio-backend`` child;
* ``"device"``: a property the balloon device implements (``guest-stats``, the polling interval);
* ``"child"``: a child object machine.py creates (``value`` is its type).
"""

from __future__ import annotations

from typing import Any

#: (name, QOM type or None for an alias of the backend's property, value, kind)
PCI_PROXY: tuple[tuple[str, str | None, Any, str], ...] = (
    ("type", "string", None, "ro"),
    ("parent_bus", "link<bus>", "/machine/i440fx/pci.0", "link"),
    ("realized", "bool", True, "runtime"),
    ("hotplugged", "bool", False, "runtime"),
    ("hotpluggable", "bool", True, "runtime"),
    ("failover_pair_id", "str", "", "static"),
    ("romfile", "str", "", "static"),
    ("addr", "int32", 16, "static"),
    ("romsize", "uint32", 4294967295, "static"),
    ("x-pcie-lnksta-dllla", "bool", True, "static"),
    ("rombar", "uint32", 1, "static"),
    ("x-pcie-extcap-init", "bool", True, "static"),
    ("acpi-index", "uint32", 0, "static"),
    ("multifunction", "bool", False, "static"),
    ("legacy-addr", "str", "02.0", "ro"),
    ("migrate-extra", "bool", True, "static"),
    ("ats", "bool", False, "static"),
    ("x-ignore-backend-features", "bool", False, "static"),
    ("x-pcie-pm-init", "bool", True, "static"),
    ("aer", "bool", False, "static"),
    ("x-pcie-flr-init", "bool", True, "static"),
    ("x-pcie-lnkctl-init", "bool", True, "static"),
    ("x-ats-page-aligned", "bool", True, "static"),
    ("page-per-vq", "bool", False, "static"),
    ("x-pcie-deverr-init", "bool", True, "static"),
    ("virtio-pci-bus-master-bug-migration", "bool", False, "static"),
    ("modern-pio-notify", "bool", False, "static"),
    ("x-disable-pcie", "bool", False, "static"),
    ("disable-legacy", "OnOffAuto", "off", "static"),
    ("disable-modern", "bool", False, "static"),
    ("free-page-reporting", None, None, "alias"),
    ("indirect_desc", None, None, "alias"),
    ("virtio-pci-device-virtio-balloon[0]", "child<memory-region>", None, "mr"),
    ("iommu_platform", None, None, "alias"),
    ("deflate-on-oom", None, None, "alias"),
    ("use-disabled-flag", None, None, "alias"),
    ("event_idx", None, None, "alias"),
    ("bus master container[0]", "child<memory-region>", None, "mr"),
    ("page-poison", None, None, "alias"),
    ("guest-stats-polling-interval", None, None, "alias"),
    ("guest-stats", None, None, "alias"),
    ("x-disable-legacy-check", None, None, "alias"),
    ("any_layout", None, None, "alias"),
    ("iothread", None, None, "alias"),
    ("notify_on_empty", None, None, "alias"),
    ("virtio-pci-notify-virtio-balloon[0]", "child<memory-region>", None, "mr"),
    ("queue_reset", None, None, "alias"),
    ("qemu-4-0-config-size", None, None, "alias"),
    ("packed", None, None, "alias"),
    ("use-started", None, None, "alias"),
    ("free-page-hint", None, None, "alias"),
    ("virtio-pci[1]", "child<memory-region>", None, "mr"),
    ("virtio-pci-notify-pio-virtio-balloon[0]", "child<memory-region>", None, "mr"),
    ("virtio-pci-common-virtio-balloon[0]", "child<memory-region>", None, "mr"),
    ("virtio-pci[0]", "child<memory-region>", None, "mr"),
    ("virtio-pci-isr-virtio-balloon[0]", "child<memory-region>", None, "mr"),
    ("bus master[0]", "child<memory-region>", None, "mr"),
    ("virtio-bus", "child<virtio-pci-bus>", "virtio-pci-bus", "child"),
    ("virtio-backend", "child<virtio-balloon-device>", "virtio-balloon-device", "child"),
)

BACKEND: tuple[tuple[str, str, Any, str], ...] = (
    ("type", "string", None, "ro"),
    ("parent_bus", "link<bus>", None, "link"),  # value: the proxy's virtio-bus
    ("realized", "bool", True, "runtime"),
    ("hotplugged", "bool", False, "runtime"),
    ("hotpluggable", "bool", False, "runtime"),
    ("queue_reset", "bool", True, "static"),
    ("use-disabled-flag", "bool", True, "static"),
    ("packed", "bool", False, "static"),
    ("iommu_platform", "bool", False, "static"),
    ("event_idx", "bool", True, "static"),
    ("x-disable-legacy-check", "bool", False, "static"),
    ("notify_on_empty", "bool", True, "static"),
    ("any_layout", "bool", True, "static"),
    ("use-started", "bool", True, "static"),
    ("indirect_desc", "bool", True, "static"),
    ("legacy-iothread", "str", None, "unreadable"),
    ("iothread", "link<iothread>", "", "static"),
    ("deflate-on-oom", "bool", None, "static"),  # values from the BalloonSpec
    ("free-page-hint", "bool", None, "static"),
    ("page-poison", "bool", None, "static"),  # from the BalloonSpec (on by default)
    ("qemu-4-0-config-size", "bool", False, "static"),
    ("free-page-reporting", "bool", None, "static"),
    ("guest-stats-polling-interval", "int", None, "device"),
    ("guest-stats", "guest statistics", None, "device"),
)

#: /machine (pc-i440fx) without its dynamic members (memory, rtc-time) and children, which machine.py adds.
MACHINE: tuple[tuple[str, str, Any, str], ...] = (
    ("type", "string", None, "ro"),
    ("kernel", "string", "", "static"),
    ("dt-compatible", "string", "", "static"),
    ("boot", "BootConfiguration", {"order": "cad"}, "static"),
    ("memory", "MemorySizeConfiguration", None, "static"),  # {"size": RAM}
    ("initrd", "string", "", "static"),
    ("confidential-guest-support", "link<confidential-guest-support>", "", "link"),
    ("graphics", "bool", True, "static"),
    ("usb", "bool", False, "static"),
    ("firmware", "string", "bios-256k.bin", "static"),
    ("memory-encryption", "string", "", "static"),
    ("smp", "SMPConfiguration", {"cpus": 1, "maxcpus": 1, "threads": 1, "cores": 1, "dies": 1, "sockets": 1,
                                 "clusters": 1}, "static"),
    ("dump-guest-core", "bool", True, "static"),
    ("phandle-start", "int", 0, "static"),
    ("dumpdtb", "string", "", "static"),
    ("memory-backend", "link<memory-backend>", "/objects/pc.ram", "link"),
    ("dtb", "string", "", "static"),
    ("mem-merge", "bool", True, "static"),
    ("append", "string", "", "static"),
    ("suppress-vmdesc", "bool", False, "static"),
    ("smm", "OnOffAuto", "auto", "static"),
    ("acpi", "OnOffAuto", "auto", "static"),
    ("pit", "OnOffAuto", "auto", "static"),
    ("pic", "OnOffAuto", "auto", "static"),
    ("x-oem-table-id", "string", "BXPC    ", "static"),
    ("bus-lock-ratelimit", "uint64_t", 0, "static"),
    ("sgx-epc", "SgxEPC", [], "static"),
    ("x-oem-id", "string", "BOCHS ", "static"),
    ("max-fw-size", "size", 8388608, "static"),
    ("default-bus-bypass-iommu", "bool", False, "static"),
    ("device-memory-region-size", "int", 0, "static"),
    ("sata", "bool", True, "static"),
    ("vmport", "OnOffAuto", "on", "static"),
    ("i8042", "bool", True, "static"),
    ("hpet", "bool", True, "static"),
    ("smbios-entry-point-type", "str", "32", "static"),
    ("max-ram-below-4g", "size", 3758096384, "static"),
    ("smbus", "bool", True, "static"),
    ("unattached", "child<container>", "container", "child"),
    ("fw_cfg", "child<fw_cfg_io>", "fw_cfg_io", "child"),
    ("peripheral-anon", "child<container>", "container", "child"),
    ("nvdimm", "bool", False, "static"),
    ("peripheral", "child<container>", "container", "child"),
    ("nvdimm-persistence", "string", "", "static"),
    ("rtc_state", "link<isa-device>", "/machine/unattached/device[9]", "link"),
    ("smram", "link<memory-region>", "/machine/unattached/device[2]/smram[0]", "link"),
    ("cxl-fmw", "CXLFixedMemoryWindow", [], "static"),
    ("rtc-time", "struct tm", None, "ro"),  # the host wall clock
    ("acpi-device", "link<hotplug-handler>", "/machine/unattached/device[18]", "link"),
    ("hmat", "bool", False, "static"),
    ("cxl", "bool", False, "static"),
    ("pcspk-audiodev", "str", "", "static"),
    ("i440fx", "child<i440FX-pcihost>", "i440FX-pcihost", "child"),
)

#: The root container: ``qom-list /``.
ROOT_CHILDREN = (("objects", "container"), ("machine", None), ("chardevs", "container"))
