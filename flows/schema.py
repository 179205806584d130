"""The flow file format: pipecat's `FlowConfig`, extended for phone calls.

A callwright flow is a valid superset of pipecat's declarative flow config
(`pipecat.flows.FlowConfig`): the same `initial_node`, `nodes`, `global_functions`,
`role_message`, `task_messages`, `functions` (with `transition_to` and pipecat's
result `Branch`), `pre_actions` and `post_actions`. What pipecat leaves to an LLM
and to Python handlers, a phone flow says in the file: slots to collect and how to
check them, intent examples and patterns, DTMF keys, conditions, silence and
no-match handling with retries and a fallback, interruption settings, and actions
(webhook, Python function, remember, transfer, send DTMF, end the call).

`flow_json_schema()` publishes the JSON Schema editors use to complete and check
flow files; `flows/flow.schema.json` is its committed copy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pipecat.flows.config import FlowConfig
from pydantic import BaseModel, ConfigDict, Field, field_validator

Branch = FlowConfig.Branch  # `field` names a value in the flow's context, e.g. `slots.confirm`
Message = FlowConfig.Message

SlotType = Literal[
    "text", "number", "digits", "date", "time", "phone", "email", "yes_no", "choice"
]

FILL_SLOTS = "fill_slots"  # the tool an LLM calls with the values a node collects


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Actions: pipecat's built-in types (`tts_say`, `end_conversation`, `function`) keep
# their names and meaning; the others are callwright's.


class SayAction(_Strict):
    """Speak a template."""

    type: Literal["tts_say"]
    text: str


class EndAction(_Strict):
    """Say an optional goodbye, then hang up once it has been heard."""

    type: Literal["end_conversation", "end_call"]
    text: str | None = None


class FunctionAction(_Strict):
    """Call a Python function the flow file declares under `handlers`."""

    type: Literal["function"]
    handler: str = Field(description="A key of the flow's `handlers` mapping.")
    args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments; string values are templates."
    )
    save_as: str | None = Field(None, description="Store the result as `vars.<save_as>`.")
    timeout_s: float = Field(10.0, gt=0)
    on_error: str | None = Field(None, description="Node to go to when the function fails.")


class WebhookAction(_Strict):
    """Call an HTTP endpoint; its JSON answer can be saved and branched on."""

    type: Literal["webhook"]
    url: str = Field(description="A template; only http and https URLs are called.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: dict[str, Any] | None = Field(
        None, alias="json", description="Body sent as JSON; string values are templates."
    )
    timeout_s: float = Field(5.0, gt=0, le=60)
    save_as: str | None = None
    on_error: str | None = Field(
        None, description="Node to go to on a timeout, a network error or a non-2xx answer."
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RememberAction(_Strict):
    """Write a fact about the caller to long-term memory."""

    type: Literal["remember"]
    kind: Literal["fact", "preference", "summary", "commitment"] = "fact"
    text: str
    value: dict[str, Any] | None = None


class TransferAction(_Strict):
    """Hand the call to a person at another number."""

    type: Literal["transfer"]
    to: str = Field(description="E.164 number or a template that renders one.")
    text: str | None = Field(None, description="What to say before transferring.")


class SendDtmfAction(_Strict):
    """Play DTMF tones to the far end (an IVR, a conference bridge)."""

    type: Literal["send_dtmf"]
    # Only keys the transport can play as tones (pipecat's KeypadEntry): no "w" pauses.
    digits: str = Field(pattern=r"^[0-9*#]+$")


class SetAction(_Strict):
    """Set `vars.<name>` to the value of an expression."""

    type: Literal["set"]
    values: dict[str, str] = Field(description="name -> expression")


class ClearAction(_Strict):
    """Forget slot values so their questions are asked again."""

    type: Literal["clear"]
    slots: list[str]


class RepeatAction(_Strict):
    """Say the agent's last words again."""

    type: Literal["repeat"]


Action = Annotated[
    SayAction
    | EndAction
    | FunctionAction
    | WebhookAction
    | RememberAction
    | TransferAction
    | SendDtmfAction
    | SetAction
    | ClearAction
    | RepeatAction,
    Field(discriminator="type"),
]


class Slot(_Strict):
    """A value the node collects from the caller."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: SlotType = "text"
    description: str | None = Field(None, description="For audio LLMs: what the value means.")
    prompt: str | None = Field(None, description="The question that asks for it (a template).")
    required: bool = True
    choices: dict[str, list[str]] | list[str] | None = Field(
        None, description="For `choice`: the options, or option -> words that mean it."
    )
    pattern: str | None = Field(
        None, description="For `text`: a regex; its first group (or the match) is the value."
    )
    length: int | None = Field(
        None, ge=1, description="For `digits`: how many digits the value has (an order number, "
        "a PIN); other counts are not taken as the value.",
    )
    validate_: str | None = Field(
        None, alias="validate", description="An expression over `value` and `slots`."
    )
    invalid: str | None = Field(None, description="What to say when `validate` fails.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def choice_words(self) -> dict[str, list[str]]:
        """Each option of a `choice` slot with the words that mean it, the option's name first."""
        if isinstance(self.choices, dict):
            return {k: [k, *v] for k, v in self.choices.items()}
        return {c: [c] for c in self.choices or []}


class Transition(_Strict):
    """What happens on an event: say something, run actions, move on."""

    when: str | None = Field(None, description="A condition; the transition is skipped if false.")
    say: str | None = None
    actions: list[Action] = Field(default_factory=list)
    transition_to: str | Branch | None = None

    def targets(self) -> list[str]:
        """The nodes it can lead to: `transition_to`, or a branch's cases and default."""
        if self.transition_to is None:
            return []
        if isinstance(self.transition_to, str):
            return [self.transition_to]
        return self.transition_to.targets()


class Function(FlowConfig.Function):
    """pipecat's flow function, which an LLM calls by name, plus how the embedded
    understanding recognises it: example sentences, regex patterns, DTMF keys."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    description: str | None = Field(  # type: ignore[assignment]
        None, description="What the caller means; the LLM's tool description."
    )
    examples: list[str] = Field(default_factory=list, description="Things a caller might say.")
    patterns: list[str] = Field(default_factory=list, description="Regexes (case-insensitive).")
    dtmf: str | None = Field(None, pattern=r"^[0-9*#]+$")
    when: str | None = None
    say: str | None = None
    actions: list[Action] = Field(default_factory=list)
    transition_to: str | Branch | None = None  # type: ignore[assignment]

    def _check_shape(self) -> Function:  # replaces pipecat's: descriptions are always allowed
        return self

    def targets(self) -> list[str]:
        """The nodes it can lead to, as `Transition.targets`."""
        return Transition.targets(self)  # type: ignore[arg-type]


class Retry(_Strict):
    """Re-ask a few times, then take the fallback."""

    say: str | None = None
    retries: int = Field(2, ge=0, le=10)
    then: Transition | None = Field(None, description="The fallback once retries run out.")

    @field_validator("then", mode="before")
    @classmethod
    def _node_name(cls, value: Any) -> Any:
        return {"transition_to": value} if isinstance(value, str) else value


class Silence(Retry):
    """Re-ask after `timeout_s` seconds of silence, a few times, then take the fallback."""

    timeout_s: float = Field(8.0, gt=0, le=120)


class Interruptions(_Strict):
    """What may stop the agent while it speaks (README, Interruptions). Under `defaults`
    for the whole flow (its language, say), on a node for that node's words; unset
    fields keep the call's settings."""

    stop_phrases: list[str] | None = Field(None, description="Always interrupt.")
    backchannels: list[str] | None = Field(None, description="Never interrupt on their own.")
    min_words: int | None = Field(
        None, ge=1, le=100, description="Words beyond backchannels that interrupt."
    )
    long_speech_s: float | None = Field(
        None, gt=0, le=60, description="Main-caller speech this long interrupts without words."
    )

    def overrides(self) -> dict[str, object]:
        """The set fields, as `agent.interruptions.InterruptionSettings` keyword arguments."""
        return {k: tuple(v) if isinstance(v, list) else v
                for k, v in self.model_dump(exclude_none=True).items()}


class Node(FlowConfig.Node):
    """pipecat's node plus what a phone step needs."""

    model_config = ConfigDict(extra="forbid")

    task_messages: list[Message] = Field(default_factory=list)  # type: ignore[assignment]
    functions: list[Function] = Field(default_factory=list)  # type: ignore[assignment]
    pre_actions: list[Action] = Field(default_factory=list)  # type: ignore[assignment]
    post_actions: list[Action] = Field(default_factory=list)  # type: ignore[assignment]
    say: str | None = Field(None, description="Spoken on entry (a template).")
    slots: list[Slot] = Field(default_factory=list)
    on_filled: list[Transition] = Field(
        default_factory=list, description="Tried in order once every required slot is filled."
    )
    conditions: list[Transition] = Field(
        default_factory=list, description="Checked on entry and after every caller turn."
    )
    corrections: list[str] = Field(
        default_factory=list,
        description="Slots of earlier nodes the caller may correct here; the node restarts.",
    )
    no_match: Retry | None = None
    silence: Silence | None = None
    interruptible: bool = Field(True, description="False: the caller cannot barge in.")
    interruptions: Interruptions | None = None
    outcome: str | None = Field(
        None, max_length=32, pattern=r"^[a-z][a-z0-9_-]*$",
        description="The call's outcome once it enters this node (e.g. booked); sent to the "
        "business webhooks at the call's end.",
    )

    @field_validator("on_filled", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [{"transition_to": value}]
        return [value] if isinstance(value, dict) else value


class Defaults(_Strict):
    """Flow-wide settings; a node's own `no_match` or `silence` is used instead of these.

    A node's `interruptions` override these field by field.
    """

    no_match: Retry = Field(default_factory=Retry)
    silence: Silence = Field(default_factory=Silence)
    intent_threshold: float = Field(
        0.55, gt=0, lt=1, description="Least cosine similarity for an intent by embedding."
    )
    region: str = Field("US", description="Default region for phone numbers.")
    interruptions: Interruptions = Field(default_factory=Interruptions)


class Flow(FlowConfig):
    """A whole flow file."""

    model_config = ConfigDict(extra="forbid", title="callwright flow")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    nodes: dict[str, Node] = Field(min_length=1)  # type: ignore[assignment]
    global_functions: list[Function] = Field(default_factory=list)  # type: ignore[assignment]
    global_conditions: list[Transition] = Field(
        default_factory=list,
        description="Checked after every caller turn, at any node, before the node's own "
        "handling (e.g. `call.frustration >= 2`); each leads to a node the call has not "
        "visited yet, so it is taken at most once.",
    )
    handlers: dict[str, str] = Field(
        default_factory=dict,
        description="name -> 'package.module:function'; only these may be called.",
    )
    defaults: Defaults = Field(default_factory=Defaults)
    record: bool | None = Field(
        None, description="Record this flow's calls to disk; unset: RECORD_CALLS decides."
    )

    def _check_graph(self) -> Flow:  # the loader checks references, with positions
        return self

    def slot(self, name: str) -> Slot | None:
        """The slot called `name`, whichever node collects it; None if no node does."""
        for node in self.nodes.values():
            for slot in node.slots:
                if slot.name == name:
                    return slot
        return None


def flow_json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of flow files, with the keys as written in the files."""
    schema = Flow.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def flow_json_schema_text() -> str:
    """`flow_json_schema()` as stable JSON text (sorted keys), as `flow.schema.json` holds it."""
    return json.dumps(flow_json_schema(), indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True, kw_only=True)
class LoadedFlow:
    """A flow as loaded from its file, with the Python handlers its actions call."""

    spec: Flow
    version: str  # sha256 of the file's bytes, first 16 hex digits
    source: str  # the file it came from
    handlers: dict[str, Callable] = field(default_factory=dict)
