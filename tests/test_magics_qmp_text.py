"""The ``%%qmp`` cell parser (balloonlab.magics.qmp_text): QEMU's doc examples, transcripts, qmp-shell form, bad
input."""

from __future__ import annotations

import json

import pytest

from balloonlab.magics.qmp_text import QMPCommand, QMPTextError, format_message, parse_qmp_text, parse_shell_command
from tests.magics_doc_examples import DOC_PATH, RST_EXAMPLES, TXT_EXAMPLES

EXPECTED_DOC_COMMANDS = [
    ("qom-set", {"path": DOC_PATH, "property": "guest-stats-polling-interval", "value": 2}),
    ("qom-set", {"path": DOC_PATH, "property": "guest-stats-polling-interval", "value": 10}),
    ("qom-get", {"path": DOC_PATH, "property": "guest-stats"}),
    ("qom-set", {"path": DOC_PATH, "property": "stats-polling-interval", "value": 0}),
]


@pytest.mark.parametrize("examples", [RST_EXAMPLES, TXT_EXAMPLES], ids=["rst", "txt"])
def test_each_doc_example_is_one_command_and_the_docs_reply_is_skipped(examples):
    for text, (name, arguments) in zip(examples, EXPECTED_DOC_COMMANDS):
        [cmd] = parse_qmp_text(text)
        assert (cmd.execute, cmd.arguments, cmd.has_id) == (name, arguments, False)


@pytest.mark.parametrize("examples", [RST_EXAMPLES, TXT_EXAMPLES], ids=["rst", "txt"])
def test_all_four_doc_examples_in_one_cell_keep_their_order_and_lines(examples):
    text = "\n".join(examples)
    cmds = parse_qmp_text(text, first_line=2)
    assert [(c.execute, c.arguments) for c in cmds] == EXPECTED_DOC_COMMANDS
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if '"execute"' in line]
    assert [c.line for c in cmds] == [2 + i for i in starts]


def test_transcript_prefixes_are_stripped_and_server_lines_skipped():
    text = """
-> { "execute": "qmp_capabilities" }
<- { "return": {} }
-> { "execute": "query-balloon", "id": "b1" }
<- {"return": {"actual": 536870912}, "id": "b1"}
<- { "timestamp": { "seconds": 1, "microseconds": 2 },
     "event": "BALLOON_CHANGE", "data": { "actual": 1 } }
-> qom-get path=/machine/peripheral/balloon0 property=guest-stats-polling-interval
<- {"return": 0}
"""
    cmds = parse_qmp_text(text)
    assert [c.execute for c in cmds] == ["qmp_capabilities", "query-balloon", "qom-get"]
    assert cmds[1].id == "b1" and cmds[1].to_wire() == {"execute": "query-balloon", "id": "b1"}
    assert cmds[2].arguments == {"path": "/machine/peripheral/balloon0", "property": "guest-stats-polling-interval"}


def test_several_objects_on_one_line_and_ids_of_any_type():
    cmds = parse_qmp_text('{"execute": "stop", "id": 7}{"execute":"cont","id":{"a":[1]}} {"execute": "query-status"}')
    assert [(c.execute, c.id if c.has_id else None) for c in cmds] == [("stop", 7), ("cont", {"a": [1]}),
                                                                      ("query-status", None)]


def test_comments_and_blank_lines():
    cmds = parse_qmp_text("# enable polling\n\n   query-balloon   \n# done\n")
    assert cmds == [QMPCommand("query-balloon", {}, line=3)]


def test_qmp_shell_values_are_json_or_strings_and_dotted_keys_nest():
    cmd = parse_shell_command(
        'x-cmd n=2 f=1.5 t=true T=True no=null s="a b" q=\'c d\' raw=/machine/peripheral-anon/device[1] '
        'obj={"k": [1, 2]} a.b.c=1 a.b.d=x neg=-1 big=18446744073709551615')
    assert cmd.execute == "x-cmd"
    assert cmd.arguments == {
        "n": 2, "f": 1.5, "t": True, "T": True, "no": None, "s": "a b", "q": "c d",
        "raw": "/machine/peripheral-anon/device[1]", "obj": {"k": [1, 2]}, "a": {"b": {"c": 1, "d": "x"}},
        "neg": -1, "big": 2**64 - 1,
    }


@pytest.mark.parametrize("line, message", [
    ("qom-get path", "expected a key=value pair, got 'path'"),
    ("qom-get =x", "expected a key=value pair"),
    ("qom-get a=1 a=2", "cannot set 'a' more than once"),
    ("qom-get a=1 a.b=2", "cannot use 'a' as both leaf and non-leaf key"),
    ("qom-get a.b=2 a=1", "cannot use 'a' as both leaf and non-leaf key"),
    ('qom-get p="unterminated', "unterminated \" quote"),
    ("Enable polling with 2 seconds interval:", "expected a key=value pair, got 'polling'"),
    ("transaction( a=1", "transaction( ... ) form is not supported"),
    ("2 + 2", "is not a QMP command name"),
])
def test_bad_qmp_shell_lines(line, message):
    with pytest.raises(QMPTextError, match=None) as info:
        parse_qmp_text(f"query-status\n{line}\n")
    assert message in str(info.value)
    assert info.value.line == 2


@pytest.mark.parametrize("text, message", [
    ('{"execute": "qom-get", "arguments": {"path": "/x",}}', "JSON parse error"),
    ('{execute: "stop"}', "JSON parse error: Expecting property name enclosed in double quotes (column 2)"),
    ('{"execute": "stop"', "JSON parse error: unterminated object"),
    ('{"execute": "stop}', "JSON parse error: unterminated string"),
    ('["stop"]', "QMP input must be a JSON object"),
    ('"stop"', "QMP input must be a JSON object"),
    ('{"exec": "stop"}', "QMP input member 'exec' is unexpected"),
    ('{"execute": 1}', "QMP input member 'execute' must be a string"),
    ('{"execute": "stop", "arguments": []}', "QMP input member 'arguments' must be an object"),
    ('{"execute": "stop", "x": 1}', "QMP input member 'x' is unexpected"),
    ('{"arguments": {}}', "QMP input lacks member 'execute'"),
    ('{"exec-oob": "migrate-pause"}', "in-band commands only"),
])
def test_bad_json_requests_say_what_qemu_would(text, message):
    with pytest.raises(QMPTextError) as info:
        parse_qmp_text("query-status\n\n" + text, first_line=2)
    assert message in str(info.value)
    assert str(info.value).startswith("line 4: ")


def test_single_quoted_strings_are_read_as_qemu_reads_them():
    cmds = parse_qmp_text("""{ 'execute': 'qom-get', 'arguments': { 'path': "/machine/peripheral/it's",
                              'property': 'say \\'"hi"\\'' } }""")
    assert cmds == [QMPCommand("qom-get", {"path": "/machine/peripheral/it's", "property": "say '\"hi\"'"})]


def test_a_json_error_reports_its_line_and_column_in_the_cell():
    with pytest.raises(QMPTextError) as info:
        parse_qmp_text('query-status\n   {"execute": "stop",}')
    assert info.value.line == 2 and "(column 23)" in str(info.value)  # the "}" after the comma


def test_a_json_error_on_a_later_line_reports_that_line():
    with pytest.raises(QMPTextError) as info:
        parse_qmp_text('{ "execute": "qom-get",\n  "arguments": { "path": "/x"\n  "property": "y" } }', first_line=2)
    assert info.value.line == 4


def test_replies_events_and_greeting_are_not_commands():
    text = ('{"return": {}}\n{"error": {"class": "GenericError", "desc": "x"}}\n'
            '{"QMP": {"version": {}, "capabilities": []}}\n'
            '{"timestamp": {"seconds": 1, "microseconds": 0}, "event": "STOP"}\n')
    assert parse_qmp_text(text) == []


def test_to_wire_leaves_out_empty_arguments_like_the_docs():
    assert QMPCommand("query-balloon").to_wire() == {"execute": "query-balloon"}
    assert QMPCommand("balloon", {"value": 1}).to_wire() == {"execute": "balloon", "arguments": {"value": 1}}


def test_format_message_is_compact_when_short_and_indented_when_long():
    assert format_message({"return": {}}) == '{"return": {}}'
    long = {"return": {"stats": {f"stat-{i}": 18446744073709551615 for i in range(4)}, "last-update": 0}}
    text = format_message(long)
    assert text.count("\n") > 4 and json.loads(text) == long
