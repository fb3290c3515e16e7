"""The layering of whisper_ft, checked on the source: lower layers never import command modules, and
no import cycles among whisper_ft modules (imports inside functions count: they run too)."""

from __future__ import annotations

import ast
from pathlib import Path

import whisper_ft

PACKAGE = Path(whisper_ft.__file__).parent
COMMAND_MODULES = ("whisper_ft.workflows.evaluate", "whisper_ft.workflows.convert", "whisper_ft.workflows.compare", "whisper_ft.serve",
                   "whisper_ft.cli")
LOWER_LAYERS = ("whisper_ft.decoding", "whisper_ft.models")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """whisper_ft modules ``path`` imports anywhere (top level or inside functions); ``from pkg
    import sub`` counts as importing ``pkg.sub`` when that is a module."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import whisper_ft.x.y` where y is a name: its module
                t = t.rpartition(".")[0]
            # a submodule's own parent packages are imported before it, so they are not a dependency
            if t.startswith("whisper_ft") and t != name and not name.startswith(t + "."):
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imported_modules(path, name, known) for name, path in modules.items()}


def is_under(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_import_walker_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom whisper_ft.core.errors import WhisperFtError\n\n"
                 "def f():\n    from whisper_ft.decoding import ct2\n    import whisper_ft.workflows.convert\n")
    known = set(all_modules())
    assert imported_modules(f, "whisper_ft.x", known) == {"whisper_ft.core.errors", "whisper_ft.decoding.ct2",
                                                          "whisper_ft.workflows.convert"}
    assert imported_modules(f, "whisper_ft.decoding.x", known) == {"whisper_ft.core.errors", "whisper_ft.decoding.ct2",
                                                                   "whisper_ft.workflows.convert"}
    f.write_text("from whisper_ft.cli import app\n")
    assert imported_modules(f, "whisper_ft.cli.x", known) == set()  # its parent package: imported first anyway


def test_lower_layers_never_import_command_modules():
    graph = import_graph()
    assert any(is_under(m, ("whisper_ft.decoding",)) for m in graph)  # the walk found the package
    bad = sorted(f"{m} imports {t}" for m, targets in graph.items() if is_under(m, LOWER_LAYERS)
                 for t in targets if is_under(t, COMMAND_MODULES))
    assert bad == []


def test_no_import_cycles_among_whisper_ft_modules():
    graph = import_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert [" -> ".join(c) for c in cycles] == []


RECIPES = ("whisper_ft.training", "whisper_ft.speech_llm")
TRAINKIT = "whisper_ft.trainkit"


def test_the_two_recipes_share_only_trainkit():
    """The Whisper LoRA recipe and the speech-LLM recipe never import each other; the generic training
    machinery both use (whisper_ft.trainkit) imports neither."""
    graph = import_graph()
    assert any(is_under(m, (TRAINKIT,)) for m in graph) and any(is_under(m, ("whisper_ft.speech_llm",)) for m in graph)
    bad = []
    for m, targets in graph.items():
        for t in targets:
            if is_under(m, (TRAINKIT,)) and is_under(t, RECIPES):
                bad.append(f"{m} imports {t}")
            for own in RECIPES:
                other = next(r for r in RECIPES if r != own)
                if is_under(m, (own,)) and is_under(t, (other,)):
                    bad.append(f"{m} imports {t}")
    assert sorted(bad) == []
    # the speech-LLM recipe really uses the shared pieces (the walk sees them)
    assert any(is_under(t, (TRAINKIT,)) for m, ts in graph.items() if is_under(m, ("whisper_ft.speech_llm",))
               for t in ts)


def test_the_speech_llm_command_module_imports_no_whisper_recipe_directly():
    modules = all_modules()
    direct = imported_modules(modules["whisper_ft.cli.llm"], "whisper_ft.cli.llm", set(modules))
    assert not any(is_under(t, ("whisper_ft.training",)) for t in direct)
    assert any(is_under(t, ("whisper_ft.speech_llm",)) for t in direct)


# The package layers, bottom to top. A module may import its own layer and the ones below, never one
# above: a reader knows from the folder which room a file belongs to, and what it may use.
LAYERS = (
    ("whisper_ft.core", "whisper_ft.resources"),  # errors, console, audio, manifest, text, scoring, writers ...
    ("whisper_ft.models",),  # names -> folders, vocabulary, CTranslate2 export/import
    ("whisper_ft.decoding",),  # backends, decoding options, packing, long-form
    ("whisper_ft.data", "whisper_ft.trainkit"),  # corpus preparation; the training machinery
    ("whisper_ft.training", "whisper_ft.speech_llm"),  # the two recipes
    ("whisper_ft.workflows", "whisper_ft.serve", "whisper_ft.scale"),  # what commands run
    ("whisper_ft.api",),  # the Python API
    ("whisper_ft.cli", "whisper_ft.__main__"),  # parsing only
)


def layer_of(module: str) -> int | None:
    return next((i for i, packages in enumerate(LAYERS) if is_under(module, packages)), None)


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_ones():
    graph = import_graph()
    unplaced = sorted(m for m in graph if m != "whisper_ft" and layer_of(m) is None)
    assert unplaced == [], "give these modules a layer (a package in LAYERS)"
    upward = sorted(f"{m} imports {t}" for m, targets in graph.items() if m != "whisper_ft"
                    for t in targets if layer_of(t) is not None and layer_of(t) > layer_of(m))
    assert upward == []


def test_the_top_level_holds_only_packages_and_the_entry_points():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "api.py"]


def test_decoding_and_models_know_no_recipe():
    graph = import_graph()
    bad = sorted(f"{m} imports {t}" for m, ts in graph.items() if is_under(m, ("whisper_ft.decoding", "whisper_ft.models"))
                 for t in ts if is_under(t, RECIPES))
    assert bad == []
