"""Broken flow files: each error class names the exact file:line:column and what to change."""

import textwrap

import pytest

from callwright.flows.loader import FlowFileError, load_flow

GOOD = """\
name: t
initial_node: start
nodes:
  start:
    say: Hello.
    functions:
      - name: go
        description: The caller wants to go on.
        transition_to: end
  end:
    say: Bye.
    post_actions: [{type: end_call}]
"""


def problems(tmp_path, text: str) -> str:
    path = tmp_path / "flow.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(FlowFileError) as info:
        load_flow(path)
    return str(info.value).replace(str(path), "flow.yaml")


def test_the_base_flow_is_valid(tmp_path):
    path = tmp_path / "flow.yaml"
    path.write_text(GOOD)
    assert load_flow(path).spec.name == "t"


def test_bad_indentation(tmp_path):
    text = GOOD.replace("    say: Bye.", "     say: Bye.")
    message = problems(tmp_path, text)
    assert message.startswith("flow.yaml:12:5: invalid YAML"), message
    assert "does not match line 11 above it" in message


def test_tab_indentation(tmp_path):
    message = problems(tmp_path, GOOD.replace("    say: Hello.", "\tsay: Hello."))
    assert message.startswith("flow.yaml:5:1: invalid YAML"), message
    assert "tabs" in message


def test_transition_to_unknown_node(tmp_path):
    message = problems(tmp_path, GOOD.replace("transition_to: end", "transition_to: ned"))
    assert message == ("flow.yaml:9:24: transition to unknown node 'ned': did you mean 'end'?")


def test_unknown_initial_node(tmp_path):
    message = problems(tmp_path, GOOD.replace("initial_node: start", "initial_node: begin"))
    assert message.startswith("flow.yaml:2:15: transition to unknown node 'begin'"), message


def test_unreachable_node(tmp_path):
    text = GOOD + "  orphan:\n    say: Nobody comes here.\n"
    message = problems(tmp_path, text)
    assert message.startswith("flow.yaml:13:3: node 'orphan' is unreachable"), message


def test_unknown_slot_type(tmp_path):
    text = GOOD.replace("    say: Hello.\n", "    say: Hello.\n    slots:\n"
                        "      - {name: when, type: datetime}\n")
    message = problems(tmp_path, text)
    assert message.startswith("flow.yaml:7:28: unknown slot type 'datetime': use one of text,"), (
        message)


def test_unknown_key_suggests_the_right_one(tmp_path):
    message = problems(tmp_path, GOOD.replace("    say: Bye.", "    sya: Bye."))
    assert message == "flow.yaml:11:5: unknown key 'sya'; did you mean 'say'?"


def test_duplicate_key(tmp_path):
    message = problems(tmp_path, GOOD.replace("    say: Bye.", "    say: Bye.\n    say: Again."))
    assert message.startswith("flow.yaml:12:5: duplicate key 'say'"), message


def test_unknown_action_type(tmp_path):
    message = problems(tmp_path, GOOD.replace("{type: end_call}", "{type: hang_up}"))
    assert message.startswith("flow.yaml:12:20: unknown action type 'hang_up'"), message


def test_bad_condition_and_template_are_both_reported(tmp_path):
    text = GOOD.replace("        transition_to: end",
                        "        when: slots.x >\n        transition_to: end")
    text = text.replace("    say: Bye.", "    say: Bye {{ slots.name }.")
    message = problems(tmp_path, text)
    lines = message.splitlines()
    assert lines[0].startswith("flow.yaml:9:15: invalid expression 'slots.x >'"), message
    assert lines[1].startswith("flow.yaml:12:10: template error"), message


def test_python_handlers_must_be_declared(tmp_path):
    text = GOOD.replace("post_actions: [{type: end_call}]",
                        "post_actions: [{type: function, handler: book}]")
    message = problems(tmp_path, text)
    assert message.startswith("flow.yaml:12:46: handler 'book' is not declared"), message


def test_handler_import_failure(tmp_path):
    text = GOOD + "handlers:\n  book: no_such_module:book\n"
    message = problems(tmp_path, text)
    assert message.startswith("flow.yaml:14:9: handler 'book' (no_such_module:book) cannot be"), (
        message)


def test_send_dtmf_takes_only_playable_keys(tmp_path):
    """"w" (a pause in Twilio's sendDigits) has no tone: it would fail mid-call, so the
    file is refused instead."""
    text = GOOD.replace("post_actions: [{type: end_call}]",
                        "post_actions: [{type: send_dtmf, digits: '1w2'}, {type: end_call}]")
    message = problems(tmp_path, text)
    assert message.startswith("flow.yaml:12:46: nodes.end.post_actions.0.digits"), message
