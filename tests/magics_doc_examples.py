"""The four examples of QEMU's virtio-balloon stats doc, verbatim, for the ``%%qmp`` tests.

Copied character for character (indentation and tabs included) from QEMU's ``docs/interop/virtio-balloon-stats.rst``
(the literal blocks after "Enable polling with 2 seconds interval::" etc.) and from the older
``docs/virtio-balloon-stats.txt``.  Each example is the command followed by the reply the doc shows; ``%%qmp``
skips the doc's reply and sends the command.  The "Disable polling" example names ``stats-polling-interval``, a
property QEMU never had: real QEMU answers GenericError "Property 'virtio-balloon-pci.stats-polling-interval' not
found" (see docs/qemu-behaviour.md, A).
"""

RST_ENABLE = """\
  { "execute": "qom-set",
               "arguments": { "path": "/machine/peripheral-anon/device[1]",
               "property": "guest-stats-polling-interval", "value": 2 } }

  { "return": {} }
"""

RST_CHANGE = """\
  { "execute": "qom-set",
               "arguments": { "path": "/machine/peripheral-anon/device[1]",
               "property": "guest-stats-polling-interval", "value": 10 } }

  { "return": {} }
"""

RST_GET = """\
  { "execute": "qom-get",
               "arguments": { "path": "/machine/peripheral-anon/device[1]",
               "property": "guest-stats" } }
  {
    "return": {
        "stats": {
            "stat-swap-out": 0,
            "stat-free-memory": 844943360,
            "stat-minor-faults": 219028,
            "stat-major-faults": 235,
            "stat-total-memory": 1044406272,
            "stat-swap-in": 0
        },
        "last-update": 1358529861
    }
  }
"""

RST_DISABLE = """\
  { "execute": "qom-set",
               "arguments": { "path": "/machine/peripheral-anon/device[1]",
               "property": "stats-polling-interval", "value": 0 } }

  { "return": {} }
"""

RST_EXAMPLES = (RST_ENABLE, RST_CHANGE, RST_GET, RST_DISABLE)

TXT_ENABLE = """\
{ "execute": "qom-set",
             "arguments": { "path": "/machine/peripheral-anon/device[1]",
\t\t\t "property": "guest-stats-polling-interval", "value": 2 } }

{ "return": {} }
"""

TXT_CHANGE = """\
{ "execute": "qom-set",
             "arguments": { "path": "/machine/peripheral-anon/device[1]",
\t\t\t "property": "guest-stats-polling-interval", "value": 10 } }

{ "return": {} }
"""

TXT_GET = """\
{ "execute": "qom-get",
  "arguments": { "path": "/machine/peripheral-anon/device[1]",
  "property": "guest-stats" } }
{
    "return": {
        "stats": {
            "stat-swap-out": 0,
            "stat-free-memory": 844943360,
            "stat-minor-faults": 219028,
            "stat-major-faults": 235,
            "stat-total-memory": 1044406272,
            "stat-swap-in": 0
        },
        "last-update": 1358529861
    }
}
"""

TXT_DISABLE = """\
{ "execute": "qom-set",
             "arguments": { "path": "/machine/peripheral-anon/device[1]",
\t\t\t "property": "stats-polling-interval", "value": 0 } }

{ "return": {} }
"""

TXT_EXAMPLES = (TXT_ENABLE, TXT_CHANGE, TXT_GET, TXT_DISABLE)

DOC_PATH = "/machine/peripheral-anon/device[1]"
#: What QEMU answers to the doc's "Disable polling" example (observed on 7.2 and 10.0).
DISABLE_ERROR = {"class": "GenericError", "desc": "Property 'virtio-balloon-pci.stats-polling-interval' not found"}
