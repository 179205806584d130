"""How a flow node's slots get filled: from the caller's words, from keys, or from a model's
`fill_slots` tool call, with validation, corrections and the next question."""

from __future__ import annotations

from collections.abc import Mapping

from callwright.flows import slots
from callwright.flows.turn import FlowTurn

# Words that make an answer to an already-filled slot a correction ("actually, make it 8").
_CORRECTION = ("actually", "instead", "change", "make it", "sorry", "i mean", "rather", "wrong")


class SlotFilling:
    """`FlowRun`'s slot filling. A mixin: it reads and changes the run's state (`slots`,
    `node`, `_asked`) and speaks and moves through the run's `_say` and `_transition`, so
    it is not used on its own."""

    def _missing_slot(self):
        for slot in self.node.slots:
            if slot.required and self.slots.get(slot.name) is None:
                return slot
        return None

    async def _after_slots(self, out: FlowTurn) -> bool:
        """Ask for the next missing slot, or take `on_filled`; True if it moved on."""
        slot = self._missing_slot()
        if slot is not None:
            if slot.name != self._asked:
                self._say(out, slot.prompt, node=self.node)
                self._asked = slot.name
            return False
        for transition in self.node.on_filled:
            if self._true(transition.when):
                await self._transition(transition, out)
                return True
        return False

    def _parse_slots(self, text: str) -> tuple[dict, bool]:
        region, today = self.spec.defaults.region, self._today
        cue = any(word in text.lower() for word in _CORRECTION)
        values: dict = {}
        for slot in self.node.slots:
            asked = slot.name == self._asked
            filled = self.slots.get(slot.name) is not None
            if filled and not (asked or cue or slot.type == "yes_no"):
                continue
            value = slots.parse(slot, text, today=today, region=region, asked=asked)
            if value is not None:
                values[slot.name] = value
        corrected = False
        for name in self.node.corrections:
            slot = self.spec.slot(name)
            value = slots.parse(slot, text, today=today, region=region)
            if value is not None and value != self.slots.get(name):
                values[name] = value
                corrected = True
        if corrected:  # "No, make it 8": the correction, not the "no", is the answer
            for slot in self.node.slots:
                if slot.type == "yes_no":
                    values.pop(slot.name, None)
        return values, corrected

    def _apply(self, values: Mapping, out: FlowTurn) -> bool:
        """Store valid values; say why the others were refused. True if any was stored."""
        stored = False
        for name, value in values.items():
            slot = self.spec.slot(name)
            if slot.validate_ and not self._true(slot.validate_, value=value):
                self._say(out, slot.invalid or "Sorry, that won't work.", node=self.node)
                self._asked = name
                continue
            self.slots[name] = value
            stored = True
        return stored

    def _reprompt_after_invalid(self, out: FlowTurn) -> None:
        slot = self.spec.slot(self._asked) if self._asked else None
        if slot and slot.prompt:
            self._say(out, slot.prompt, node=self.node)

    async def _fill_slots(self, arguments: Mapping, out: FlowTurn) -> None:
        """The `fill_slots` tool: store the values this node takes, refuse the rest."""
        values, errors = {}, {}
        for key, raw in arguments.items():
            slot = self.spec.slot(key)
            allowed = {s.name for s in self.node.slots} | set(self.node.corrections)
            if slot is None or key not in allowed:
                errors[key] = "not collected at this step"
                continue
            value = slots.coerce(slot, raw, today=self._today, region=self.spec.defaults.region)
            if value is None:
                errors[key] = f"not a valid {slot.type}"
            else:
                values[key] = value
        before = self.node_name
        corrected = any(k in self.node.corrections for k in values)
        self._apply(values, out)
        if corrected:
            await self._enter(self.node_name, out)
        elif not await self._after_slots(out):
            await self._check_conditions(out)
        out.tool_result = self._tool_result(before, errors)

    def _tool_result(self, before: str, errors: dict) -> dict:
        result: dict = {"node": self.node_name, "slots": dict(self.slots)}
        if self.node_name != before:
            result["moved_from"] = before
        missing = self._missing_slot()
        if missing:
            result["missing"] = missing.name
        if errors:
            result["errors"] = errors
        return result
