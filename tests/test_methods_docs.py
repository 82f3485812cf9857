"""docs/methods.md is generated from the registry; this fails when the two disagree."""

from __future__ import annotations

from peftbench.experiments.methods_table import methods_markdown
from peftbench.methods import all_methods
from tests.conftest import REPO, run_cli


def test_docs_methods_md_matches_the_registry():
    on_disk = (REPO / "docs" / "methods.md").read_text()
    assert on_disk == methods_markdown(), "regenerate: peftbench methods --markdown > docs/methods.md"


def test_every_method_has_a_row_with_its_paper_and_formula():
    text = methods_markdown()
    for spec in all_methods():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{spec.name}` |"))
        assert spec.paper in row and spec.formula and spec.formula.replace("|", "\\|") in row
        assert (f"`{spec.size_knob.field}`" in row) if spec.size_knob else ("| — |" in row)


def test_cli_prints_the_same_markdown():
    proc = run_cli("methods", "--markdown")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == methods_markdown()
