"""docs/OPERATIONS.md is kept in step with the code: its settings table lists every setting with
its default, and nothing else; docs/ARCHITECTURE.md draws the two flows in Mermaid."""

from __future__ import annotations

import dataclasses
import re

from engine.settings import Settings
from tests.conftest import ROOT

ROW = re.compile(r"^\| `([A-Z0-9_]+)` \| (`[^`]*`|\(none\)) \| (.+) \|$")


def documented_settings() -> dict[str, str]:
    text = (ROOT / "docs" / "OPERATIONS.md").read_text()
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(1)] = match.group(2).strip("`") if match.group(2) != "(none)" else ""
    return rows


def shown(f: dataclasses.Field) -> str:
    """A default as .env.example shows it."""
    if f.metadata["example"] is not None:
        return str(f.metadata["example"])
    if isinstance(f.default, bool):
        return "true" if f.default else "false"
    if isinstance(f.default, tuple):
        return ",".join(f.default)
    return str(f.default)


def test_the_operations_guide_lists_every_setting_with_its_default_and_nothing_else():
    rows = documented_settings()
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    assert set(rows) == set(fields), (
        f"missing: {sorted(set(fields) - set(rows))}, unknown: {sorted(set(rows) - set(fields))}")
    for name, default in rows.items():
        assert default == shown(fields[name]), name


def test_the_architecture_doc_draws_the_overall_and_the_detailed_flow_in_mermaid():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    diagrams = re.findall(r"```mermaid\n(.*?)```", text, re.S)
    overall = next(d for d in diagrams if "authenticates" in d)
    for step in ("sends", "queue", "in order", "metrics"):
        assert step in overall, step
    detailed = next(d for d in diagrams if "XADD" in d and "XACK" in d)
    for step in ("authenticate", "validate", "ack", "batch", "COMMIT", "receipt", "XAUTOCLAIM",
                 "dead_letters", "retry", "metric", "log"):
        assert step in detailed, step
