"""`callwright flows …`: validate, graph, rehearse and test flow files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

app = typer.Typer(help="YAML conversation flows.", no_args_is_help=True)


def _load(path: Path):
    from callwright.flows.loader import FlowFileError, load_flow

    try:
        return load_flow(path)
    except FlowFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@app.command()
def validate(files: list[Path] = typer.Argument(..., help="Flow files.")) -> None:
    """Check flow files; problems are printed as FILE:LINE:COLUMN: what to change."""
    from callwright.flows.loader import FlowFileError, load_flow

    failed = 0
    for path in files:
        try:
            flow = load_flow(path)
        except FlowFileError as exc:
            failed += 1
            typer.echo(str(exc), err=True)
            continue
        typer.echo(f"{path}: ok ({flow.spec.name}, {len(flow.spec.nodes)} nodes, "
                   f"version {flow.version})")
    if failed:
        raise typer.Exit(1)


@app.command()
def graph(
    file: Path = typer.Argument(..., help="A flow file."),
    format: str = typer.Option("mermaid", help="mermaid, dot or svg."),
    output: Path = typer.Option(None, "-o", "--output", help="Write here instead of stdout."),
) -> None:
    """Draw a flow as a Mermaid or Graphviz graph (SVG when Graphviz is installed)."""
    from callwright.flows import graph as graphs

    spec = _load(file).spec
    if format == "mermaid":
        text = graphs.mermaid(spec)
    elif format == "dot":
        text = graphs.dot(spec)
    elif format == "svg":
        text = graphs.svg(spec)
        if text is None:
            typer.echo("SVG needs Graphviz ('dot'): apt-get install graphviz, or use "
                       "--format dot", err=True)
            raise typer.Exit(1)
    else:
        raise typer.BadParameter("use mermaid, dot or svg", param_hint="--format")
    if output:
        output.write_text(text)
        typer.echo(f"wrote {output}")
    else:
        typer.echo(text, nl=False)


@app.command()
def chat(
    file: Path = typer.Argument(..., help="A flow file."),
    caller_name: str = typer.Option(None, "--caller-name", help="{{ caller.name }}."),
) -> None:
    """Rehearse a flow by typing as the caller. '#123' presses keys, an empty line is
    silence, Ctrl-D hangs up."""
    asyncio.run(_chat(_load(file), caller_name))


async def _chat(flow, caller_name: str | None) -> None:
    from callwright.flows.engine import FlowRun

    run = FlowRun(flow=flow, caller={"name": caller_name} if caller_name else {})
    typer.echo(f"{flow.spec.name} (version {flow.version}); loading the intent model...")
    turn = await run.start()
    while True:
        _show(turn)
        if turn.end_call:
            typer.echo(f"[call ended] slots: {run.slots}")
            return
        try:
            line = await asyncio.to_thread(input, "caller> ")
        except EOFError:
            typer.echo(f"\n[caller hung up] slots: {run.slots}")
            return
        line = line.strip()
        if not line:
            turn = await run.on_silence()
        elif line.startswith("#") and len(line) > 1:
            turn = await run.on_dtmf(line[1:])
        else:
            turn = await run.on_text(line)


def _show(turn) -> None:
    flags = [f"node {turn.node}"]
    if turn.matched:
        flags.append(f"via {turn.matched}")
    if not turn.interruptible:
        flags.append("not interruptible")
    if turn.dtmf:
        flags.append(f"sends DTMF {turn.dtmf}")
    if turn.transfer_to:
        flags.append(f"transfers to {turn.transfer_to}")
    typer.echo(f"agent> {turn.text}   [{', '.join(flags)}]")


@app.command()
def test(
    file: Path = typer.Argument(..., help="A flow file."),
    script: list[Path] = typer.Option(..., "--script", help="Scenario file(s) (pipecat evals "
                                      "scripted format); repeatable."),
    verbose: bool = typer.Option(False, "-v", help="Print each transcript."),
) -> None:
    """Run scripted conversations against a flow; exits 1 if any scenario fails."""
    from callwright.flows.scripts import run_script

    flow = _load(file)
    failed = 0
    for path in script:
        for result in asyncio.run(run_script(flow, path)):
            mark = "PASS" if result.passed else "FAIL"
            typer.echo(f"{mark} {result.name}")
            if verbose or not result.passed:
                for line in result.transcript:
                    typer.echo(f"    {line}")
            for failure in result.failures:
                typer.echo(f"    {failure}")
            failed += not result.passed
    if failed:
        raise typer.Exit(1)


@app.command()
def schema(output: Path = typer.Option(None, "-o", "--output")) -> None:
    """Print the flow files' JSON Schema (for editors)."""
    from callwright.flows.schema import flow_json_schema_text

    if output:
        output.write_text(flow_json_schema_text())
    else:
        typer.echo(flow_json_schema_text(), nl=False)
