"""The package layering: ``modalities/`` is pure PyTorch, and its registries sit at the bottom."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("lightning", "pytorch_lightning", "tasks")


def imports_of(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "modalities").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_modalities_never_import_lightning_or_tasks(path):
    bad = [(line, name) for line, name in imports_of(path) if name.split(".")[0] in FORBIDDEN]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: modalities/ must stay pure PyTorch"


def test_the_checkpoint_registry_imports_nothing_above_it():
    for name in ("hub.py", "registry.py", "importing.py"):
        src = (ROOT / "modalities" / name).read_text()
        rel = [n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom) and n.level > 0]
        assert set(rel) <= {"registry"}, f"modalities/{name} imports {rel}: it must sit below every modality"


def test_the_checker_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom lightning.pytorch import Trainer\n")
    assert [n for _, n in imports_of(bad) if n.split(".")[0] in FORBIDDEN] == ["lightning.pytorch"]


def test_every_preset_builds_through_one_create_encoder():
    import modalities
    from modalities.hub import PRESETS

    names = PRESETS.names()
    assert {"bert-base", "mert-v1-95m", "mert-tiny"} <= set(names)
    enc = modalities.create_encoder("mert-tiny")
    assert type(enc).__name__ == "AudioEncoder"
    assert type(modalities.create_encoder("bert-tiny")).__name__ == "TokenEncoder"
    with pytest.raises(ValueError, match="choose one of"):
        modalities.create_encoder("no-such-size")


SCRIPTS = sorted((ROOT / "scripts").glob("*.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_no_script_imports_another(path):
    """What a benchmark or demo shares with another lives in an importable package (e.g. tasks.machine)."""
    names = {p.stem for p in SCRIPTS}
    bad = [(line, name) for line, name in imports_of(path) if name.split(".")[0] in names]
    assert not bad, f"scripts/{path.name} imports the script(s) {bad}: move what they share into tasks/"


def test_no_test_or_script_edits_sys_path():
    files = [*(ROOT / "tests").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]
    bad = [str(p.relative_to(ROOT)) for p in files if p.name != "test_layering.py" and "sys.path" in p.read_text()]
    assert not bad, f"{bad} edit sys.path: import from the installed packages (modalities, tasks)"
