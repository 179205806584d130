"""`callwright users`: admin-site accounts."""

from __future__ import annotations

import sys

import typer

from callwright.admin.models import ROLES

users_app = typer.Typer(help="Admin-site users.", no_args_is_help=True)


def _run(action):  # noqa: ANN001, ANN202
    """Run `action(accounts)` against the configured database, migrated first."""
    from callwright.admin.accounts import AccountStore
    from callwright.database import run_with_database

    async def work(engine, settings):  # noqa: ANN001, ANN202
        return await action(AccountStore(engine))

    return run_with_database(work)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@users_app.command("add")
def add(
    username: str = typer.Argument(..., help="Sign-in name."),
    role: str = typer.Option("supervisor", help=f"One of: {', '.join(ROLES)}."),
    password_stdin: bool = typer.Option(False, help="Read the password from stdin (scripts)."),
) -> None:
    """Create a user; the password is prompted for (or read from stdin) and stored hashed."""
    password = _password(password_stdin)
    try:
        _run(lambda accounts: accounts.add_user(username, password, role=role))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"Added {role} {username!r}.")


@users_app.command("passwd")
def passwd(
    username: str = typer.Argument(...),
    password_stdin: bool = typer.Option(False, help="Read the password from stdin (scripts)."),
) -> None:
    """Set a user's password; their open sessions end."""
    password = _password(password_stdin)
    try:
        found = _run(lambda accounts: accounts.set_password(username, password))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if not found:
        typer.echo(f"error: no user {username!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"Password of {username!r} changed.")


@users_app.command("list")
def list_users() -> None:
    """List users, their roles and whether they may sign in."""
    for user in _run(lambda accounts: accounts.list_users()):
        state = "active" if user.active else "disabled"
        typer.echo(f"{user.username}\t{user.role}\t{state}")
