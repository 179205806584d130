"""A Python tool. The order-status flow calls it (a `function` action); with a chat model
as the backend (AUDIO_LLM_BACKEND=llm) the model reaches it through the flow's functions.
Keyword arguments in (rendered from the flow's templates), a JSON-like value out; an
exception sends the flow to the action's `on_error` node."""

ORDERS = {"4217": "shipped on Monday and arrives tomorrow", "1234": "is being packed today"}


def order_status(number: str) -> str:
    """Where order `number` is. Raises KeyError for an order we don't know."""
    return ORDERS[number]
