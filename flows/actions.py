"""What a flow node does when it is entered: `say`, `end`, `transfer`, `set`, `webhook`, a
Python `function`, and the rest of the schema's actions."""

from __future__ import annotations

import asyncio
import inspect
from urllib.parse import urlsplit

import httpx
from loguru import logger

from callwright.flows import expressions, templates
from callwright.flows.schema import (
    Action,
    ClearAction,
    EndAction,
    FunctionAction,
    RememberAction,
    RepeatAction,
    SayAction,
    SendDtmfAction,
    SetAction,
    TransferAction,
    WebhookAction,
)
from callwright.flows.turn import FlowTurn


class FlowActions:
    """`FlowRun`'s actions. A mixin: it reads and changes the run's state (`vars`, `slots`,
    `ended`) and speaks through its `_say`, so it is not used on its own."""

    def _render(self, text: str) -> str:
        try:
            return templates.render(text, self.context())
        except templates.TemplateError as exc:  # say nothing rather than drop the call
            logger.warning(f"flow {self.spec.name} node {self.node_name}: {exc}")
            return ""

    def _render_value(self, value):
        if isinstance(value, str):
            return self._render(value)
        if isinstance(value, dict):
            return {k: self._render_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render_value(v) for v in value]
        return value

    async def _run_actions(self, actions: list[Action], out: FlowTurn) -> bool:
        """Run in order; True when an error branch took the call elsewhere."""
        for action in actions:
            error_target = await self._run_action(action, out)
            if error_target:
                await self._enter(error_target, out)
                return True
            if self.ended:
                return False
        return False

    async def _run_action(self, action: Action, out: FlowTurn) -> str | None:
        match action:
            case SayAction():
                self._say(out, action.text, node=self.node)
            case EndAction():
                self._say(out, action.text, node=self.node)
                out.end_call = self.ended = True
            case TransferAction():
                self._say(out, action.text, node=self.node)
                out.transfer_to = self._render(action.to)
                self.vars["transferred_to"] = out.transfer_to
                out.end_call = self.ended = True
            case SendDtmfAction():
                out.dtmf += action.digits
            case SetAction():
                for name, expression in action.values.items():
                    try:
                        self.vars[name] = expressions.evaluate(
                            expression, self.context(), today=self._today
                        )
                    except expressions.ExpressionError as exc:
                        logger.warning(f"flow {self.spec.name}: set {name}: {exc}")
            case ClearAction():
                for name in action.slots:
                    self.slots.pop(name, None)
            case RepeatAction():
                if self._last_said:
                    out.said.append(self._last_said)
            case RememberAction():
                await self._remember(action)
            case WebhookAction():
                return await self._webhook(action)
            case FunctionAction():
                return await self._function(action)
        return None

    async def _remember(self, action: RememberAction) -> None:
        if self._memory is None:
            logger.info(f"flow {self.spec.name}: no memory configured; 'remember' skipped")
            return
        try:
            self._memory(  # queued by long-term memory; never waits on the database
                kind=action.kind, text=self._render(action.text),
                value=self._render_value(action.value) if action.value else None,
            )
        except Exception as exc:  # memory is best effort; the call goes on
            logger.warning(f"flow {self.spec.name}: remember failed: {exc!r}")

    async def _webhook(self, action: WebhookAction) -> str | None:
        url = self._render(action.url)
        try:
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"not an http(s) URL: {url!r}")
            client = self._http or httpx.AsyncClient()
            try:
                response = await client.request(
                    action.method, url, headers=self._render_value(action.headers),
                    json=self._render_value(action.json_body), timeout=action.timeout_s,
                )
            finally:
                if self._http is None:
                    await client.aclose()
            response.raise_for_status()
            try:
                result = response.json()
            except ValueError:
                result = response.text
        except Exception as exc:
            return self._action_failed(action.on_error, f"webhook {url}", exc, kind="webhook")
        if action.save_as:
            self.vars[action.save_as] = result
        return None

    async def _function(self, action: FunctionAction) -> str | None:
        function = self.flow.handlers[action.handler]
        kwargs = self._render_value(action.args)
        try:
            if inspect.iscoroutinefunction(function):
                call = function(**kwargs)
            else:
                call = asyncio.to_thread(function, **kwargs)
            result = await asyncio.wait_for(call, action.timeout_s)
        except Exception as exc:
            return self._action_failed(action.on_error, f"function {action.handler}", exc,
                                       kind="function")
        if action.save_as:
            self.vars[action.save_as] = result
        return None

    def _action_failed(
        self, on_error: str | None, what: str, exc: Exception, *, kind: str
    ) -> str | None:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        logger.warning(f"flow {self.spec.name} node {self.node_name}: {what} failed ({reason})")
        self.vars["last_error"] = reason
        if self._on_action_failed:
            self._on_action_failed(kind)
        return on_error
