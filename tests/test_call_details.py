"""What an outbound call was placed with reaches the call's context."""

from callwright.agent.context import CallContext
from callwright.calls import _with_call_details


def test_dialler_variables_override_recall_and_reach_the_instructions():
    recalled = CallContext(caller={"name": "Bob", "number": "+15550100300", "known": True},
                           instructions="What you remember about this caller: Bob.")
    context = _with_call_details(recalled, answered_by="human",
                                 variables={"name": "Ada", "day": "2026-12-03"})
    assert context.caller == {"name": "Ada", "number": "+15550100300", "known": True,
                              "day": "2026-12-03", "answered_by": "human"}
    assert context.instructions.startswith("What you remember about this caller: Bob.\n")
    assert context.instructions.endswith("from whoever placed it: name: Ada; day: 2026-12-03")
    assert context.remember is recalled.remember


def test_an_inbound_call_keeps_its_context():
    recalled = CallContext(caller={"name": "Bob"}, instructions="Bob called before.")
    assert _with_call_details(recalled, answered_by=None, variables=None) is recalled
    assert _with_call_details(CallContext(), answered_by=None, variables={"x": 1}).instructions \
        == "Details of this call, from whoever placed it: x: 1"
