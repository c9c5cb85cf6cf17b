"""README's supported-ops list is generated from the lowering registry (codegen/supported_ops.py)."""

from pathlib import Path

from codegen import supported_ops
from codegen.lowering import LOWERINGS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_section_is_the_registry():
    section = supported_ops.section_of(README.read_text(encoding="utf-8"))
    assert section is not None, "README.md lost the supported-ops markers"
    assert section == supported_ops.markdown(), (
        "README.md's supported-ops list differs from the lowering registry: run "
        "`python -m codegen.supported_ops --write README.md`"
    )


def test_a_new_packaged_lowering_changes_the_list(monkeypatch):
    """The test above can fail: registering a lowering in codegen/ops/ changes the generated text."""
    before = supported_ops.markdown()

    class Fancy:  # stands for a new torch target
        pass

    def lower_fancy(ctx, node):  # pragma: no cover - never called
        raise AssertionError

    lower_fancy.__module__ = "codegen.ops.fancy"
    monkeypatch.setitem(LOWERINGS, Fancy, lower_fancy)
    after = supported_ops.markdown()
    assert after != before and "| `fancy` |" in after


def test_int8_column_is_the_int8_registry():
    int8 = supported_ops.int8_by_family()
    assert "LayerNorm" in int8["norm"] and "GroupNorm" not in int8["norm"]  # GroupNorm's handler only refuses
    assert {"Recurrent", "RnnState"} <= set(int8["recurrent"]) and "BroadcastDiv" in int8["broadcast"]


def test_write_and_check_round_trip(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text(f"# x\n\n{supported_ops.BEGIN}\nstale\n{supported_ops.END}\n\ntail\n", encoding="utf-8")
    assert supported_ops.main(["--check", str(doc)]) == 1
    assert supported_ops.main(["--write", str(doc)]) == 0
    assert supported_ops.main(["--check", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# x\n\n") and text.endswith("\n\ntail\n") and "stale" not in text
