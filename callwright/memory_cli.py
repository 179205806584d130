"""`callwright memory`: read, erase and prune what callwright remembers about callers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer

memory_app = typer.Typer(help="Long-term memory of callers.", no_args_is_help=True)
T = TypeVar("T")


def _with_engine(work: Callable[..., Awaitable[T]]) -> T:
    from callwright.database import run_with_database

    return run_with_database(work)


@memory_app.command("show")
def show(caller: str = typer.Option(..., "--caller", help="The caller's phone number.")) -> None:
    """Print a caller's profile, last call summary and memories."""
    from callwright.memory.callers import CallerStore

    async def work(engine, settings):
        return await CallerStore(engine, default_region=settings.memory.default_region).profile(
            caller
        )

    profile = _with_engine(work)
    if profile is None:
        typer.echo(f"No caller {caller} is known.", err=True)
        raise typer.Exit(1)
    c = profile.caller
    typer.echo(f"{c.number}  name: {c.name or '-'}  language: {c.language or '-'}")
    typer.echo(f"first seen {c.first_seen:%Y-%m-%d %H:%M}, last seen {c.last_seen:%Y-%m-%d %H:%M}"
               f", {len(profile.call_ids)} calls")
    typer.echo(f"last call: {profile.last_summary or '-'}")
    for m in profile.memories:
        expires = f"  (until {m.expires_at:%Y-%m-%d})" if m.expires_at else ""
        typer.echo(f"  #{m.id} {m.created_at:%Y-%m-%d} {m.kind:<10} {m.text}{expires}")


@memory_app.command("forget")
def forget(
    caller: str = typer.Option(..., "--caller", help="The caller's phone number."),
    transcripts: bool = typer.Option(
        False, "--transcripts", help="Also delete their calls, transcripts and recordings."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Erase a caller: memories and profile, and with --transcripts their calls too."""
    from callwright.memory.erasure import forget as erase

    what = "memories, profile" + (", calls, transcripts and recordings" if transcripts else "")
    if not yes:
        typer.confirm(f"Erase the {what} of {caller}?", abort=True)

    async def work(engine, settings):
        return await erase(
            engine, number=caller, transcripts=transcripts, data_dir=settings.data_dir,
            default_region=settings.memory.default_region,
        )

    try:
        erased = _with_engine(work)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"Erased {erased.callers} caller, {erased.memories} memories, "
        f"{erased.summaries} call summaries, {erased.calls} calls, {erased.turns} turns, "
        f"{erased.recordings} recordings."
    )


@memory_app.command("prune")
def prune() -> None:
    """Delete memories past their expiry or their kind's retention (run it nightly)."""
    from callwright.memory.retention import prune as prune_memories

    async def work(engine, settings):
        return await prune_memories(engine, retention=settings.memory.retention)

    counts = _with_engine(work)
    typer.echo("Pruned " + ", ".join(f"{n} {what}" for what, n in counts.items()) + ".")
