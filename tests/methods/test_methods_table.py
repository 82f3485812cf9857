"""docs/methods.md is generated from the registry; this fails when the two disagree."""

from __future__ import annotations

import pytest

from peftbench.config import ModelConfig
from peftbench.methods import build_method_config, builtin_methods, is_layer_norm
from peftbench.methods.core.table import methods_markdown
from peftbench.models import model_skeleton
from tests.conftest import REPO, in_process


def test_docs_methods_md_matches_the_registry():
    on_disk = (REPO / "docs" / "methods.md").read_text()
    assert on_disk == methods_markdown(), "regenerate: peftbench methods --markdown > docs/methods.md"


def test_every_method_has_a_row_with_its_paper_and_formula():
    text = methods_markdown()
    for spec in builtin_methods():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{spec.name}` |"))
        assert spec.paper in row and spec.formula and spec.formula.replace("|", "\\|") in row
        assert (f"`{spec.size_knob.field}`" in row) if spec.size_knob else ("| — |" in row)


@pytest.mark.slow
def test_cli_prints_the_same_markdown():
    proc = in_process("methods", "--markdown")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == methods_markdown()


def test_every_method_states_how_it_is_built():
    for spec in builtin_methods():
        a = spec.anatomy
        assert a is not None, spec.name
        assert all([a.placement, a.init, a.activation, a.layer_norms, a.source]), spec.name
        assert a.layer_norms.startswith(("trained", "frozen")), spec.name


@pytest.mark.parametrize("preset", ["tiny-t5", "tiny-llama", "tiny-gpt2"])
def test_stated_layer_norm_training_is_what_the_model_does(preset):
    """The "layer norms" column says what applying the method with its defaults does to the model's norms' gains."""
    for spec in builtin_methods():
        if spec.supports(model_skeleton(ModelConfig(name=preset)).config):
            continue
        model = spec.apply(model_skeleton(ModelConfig(name=preset)), build_method_config(spec.name))
        gains = [m.weight for m in model.modules() if is_layer_norm(m)]
        trained = any(g.requires_grad for g in gains)
        assert trained == spec.anatomy.layer_norms.startswith("trained"), (spec.name, preset)
