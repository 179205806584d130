"""Every example flow validates, and passes its scripted conversations."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from callwright.cli import app
from callwright.flows.loader import load_flow, schema_path
from callwright.flows.schema import flow_json_schema_text
from callwright.flows.scripts import run_script

EXAMPLES = Path(__file__).resolve().parents[1] / "flows" / "examples"
FLOWS = sorted(EXAMPLES.glob("*.yaml"))
cli = CliRunner()


def test_examples_exist():
    assert {p.stem for p in FLOWS} == {"dental", "restaurant", "support", "reminder"}


def test_flows_validate_on_all_examples():
    result = cli.invoke(app, ["flows", "validate", *map(str, FLOWS)])
    assert result.exit_code == 0, result.output
    assert result.output.count(": ok (") == len(FLOWS)


def test_validate_fails_on_a_broken_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: b\ninitial_node: a\nnodes:\n  a: {say: hi, sya: ho}\n")
    result = cli.invoke(app, ["flows", "validate", str(broken)])
    assert result.exit_code == 1
    assert f"{broken}:4:16: unknown key 'sya'; did you mean 'say'?" in result.output


@pytest.mark.parametrize("flow", FLOWS, ids=lambda p: p.stem)
async def test_example_scripts_pass(flow):
    script = EXAMPLES / "tests" / flow.name
    results = await run_script(load_flow(flow), script)
    assert len(results) >= 3  # the happy path and at least two detours
    failed = {r.name: r.failures + r.transcript for r in results if not r.passed}
    assert not failed, failed


def test_flows_test_command_reports_failures(tmp_path):
    script = tmp_path / "wrong.yaml"
    script.write_text(
        "name: wrong\nscenarios:\n  - name: expects_the_wrong_node\n    turns:\n"
        "      - user: I'd like to book a table\n        node: booked\n"
    )
    result = cli.invoke(app, ["flows", "test", str(EXAMPLES / "restaurant.yaml"),
                              "--script", str(script)])
    assert result.exit_code == 1
    assert "FAIL wrong/expects_the_wrong_node" in result.output
    assert "expected node 'booked', at 'party'" in result.output


def test_graph_mermaid_and_dot():
    mermaid = cli.invoke(app, ["flows", "graph", str(EXAMPLES / "support.yaml")])
    assert mermaid.exit_code == 0
    assert 'triage -->|"connection [1]"| reboot' in mermaid.output
    assert 'global -->|"human [0]"| agent' in mermaid.output
    dot = cli.invoke(app, ["flows", "graph", str(EXAMPLES / "support.yaml"), "--format", "dot"])
    assert '"account" -> "ticket_failed" [label="filled error"];' in dot.output
    assert dot.output.startswith('digraph "support" {')


def test_committed_json_schema_is_current():
    assert schema_path().read_text() == flow_json_schema_text()
