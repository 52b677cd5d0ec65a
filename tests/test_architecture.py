"""The floor plan of docs/ARCHITECTURE.md, enforced: no module imports a module of a higher floor, and
no group of modules imports itself in a circle. Every `import strop...` counts, at the top of a file or
inside a function (an import moved into a function to dodge a cycle is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Bottom to top. A module belongs to the longest prefix that names it. Areas on one floor may import
#: each other (without cycles) unless the floor is listed in SEPARATE.
FLOORS: list[tuple[str, ...]] = [
    ("strop", "strop.errors", "strop.safe_io", "strop.manifest"),
    ("strop.runtime",),
    # MoE detection, router losses and monitoring, LoRA experts: torch only (btx builds models: a command floor)
    ("strop.moe",),
    ("strop.kernels",),
    # a vision-language model's parts and images: what loading and the strategies ask of it
    ("strop.models", "strop.vlm.models", "strop.vlm.images", "strop.vlm.tiny"),
    ("strop.data", "strop.vlm"),
    # what RL objectives score and sample with; the orchestration above them (rl/engine.py) is the strop.rl floor
    ("strop.rl.rewards", "strop.rl.sandbox", "strop.rl.rollout", "strop.rl.reward_scorer"),
    ("strop.strategies", "strop.objectives"),
    ("strop.rl",),
    # evaluators run during training (every eval_steps; the config checks their specs) and from `strop eval`
    ("strop.evaluation", "strop.judge"),
    ("strop.config",),
    ("strop.train",),
    ("strop.merge", "strop.export", "strop.datagen", "strop.evaluation.report", "strop.moe.btx"),
    ("strop.pipeline", "strop.examples", "strop.plan"),
    ("strop.commands",),
    ("strop.cli", "strop.__main__", "strop.api"),
]
#: Floors whose areas never import each other: an objective never asks which strategy is in use, and a
#: strategy never asks which objective is trained.
SEPARATE = {("strop.strategies", "strop.objectives")}


def area_of(module: str) -> tuple[int, str]:
    """(floor index, area prefix) of a dotted module name. The package itself (strop/__init__.py, the
    library's face: `strop.train(config)`) sits on the top floor; "strop" as an area holds the ground
    floor's loose modules."""
    if module == "strop":
        return len(FLOORS) - 1, "strop.cli"
    best: tuple[int, str] | None = None
    for index, areas in enumerate(FLOORS):
        for area in areas:
            if (module == area or module.startswith(area + ".")) and (best is None or len(area) > len(best[1])):
                best = (index, area)
    if best is None:
        raise AssertionError(f"{module}: on no floor; add its package to FLOORS in tests/test_architecture.py")
    return best


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "strop").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _nearest(name: str, known: dict[str, Path]) -> str:
    while name not in known:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[tuple[str, int]]:
    """(imported strop module, line) for every import in the file, functions included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(_nearest(a.name, known), node.lineno) for a in node.names if a.name.split(".")[0] == "strop"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if base.split(".")[0] != "strop":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add((full if full in known else _nearest(base, known), node.lineno))
    return {(target, line) for target, line in found if target != module}


def graph() -> dict[str, set[tuple[str, int]]]:
    known = modules()
    return {module: imports_of(module, path, known) for module, path in known.items()}


def upward_imports(edges: dict[str, set[tuple[str, int]]]) -> list[str]:
    found = []
    for module, targets in sorted(edges.items()):
        floor, area = area_of(module)
        for target, line in sorted(targets):
            target_floor, target_area = area_of(target)
            sideways = target_floor == floor and area != target_area and FLOORS[floor] in SEPARATE
            if target_floor > floor or sideways:
                found.append(
                    f"{module}:{line} imports {target} ({FLOORS[target_floor][0]} floor"
                    f"{', sideways' if sideways else ''})"
                )
    return found


def cycles(edges: dict[str, set[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _ in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_on_a_floor():
    for module in modules():
        area_of(module)


def missing_modules() -> list[str]:
    """Imports (functions included) of a strop module that does not exist: after a module moves, an import
    inside a function that nothing runs in the tests would otherwise fail only in a user's hands."""
    known = modules()
    found = []
    for module, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "strop":
                names = [node.module] if node.module in known else []
                if not names:
                    found.append(f"{module}:{node.lineno} imports {node.module}")
            elif isinstance(node, ast.Import):
                found += [
                    f"{module}:{node.lineno} imports {a.name}"
                    for a in node.names
                    if a.name.split(".")[0] == "strop" and a.name not in known
                ]
    return found


#: Parameters that hold a run's config or a run: typed (strop.config.Config / strop.train.loop.Run, or below
#: their floors the protocols of strop/run_types.py), so that mypy checks what is read from them.
TYPED_PARAMETERS = ("cfg", "run")


def untyped_parameters(module: str, source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            found += [
                f"{module}:{node.lineno} {node.name}({arg.arg})"
                for arg in args
                if arg.arg in TYPED_PARAMETERS and arg.annotation is None
            ]
    return found


def test_config_and_run_parameters_are_annotated():
    assert [line for module, path in modules().items() for line in untyped_parameters(module, path.read_text())] == []


def test_the_annotation_check_finds_an_untyped_parameter():
    source = "def f(cfg: Config, run):\n    pass\n\nclass A:\n    async def g(self, *, cfg, run: Run):\n        pass\n"
    assert untyped_parameters("strop.x", source) == ["strop.x:1 f(run)", "strop.x:5 g(cfg)"]


def test_every_imported_strop_module_exists():
    assert missing_modules() == []


def test_no_module_imports_a_higher_floor():
    assert upward_imports(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checks_catch_what_they_look_for():
    """The checks themselves: an upward import, a sideways one, a cycle and an unplaced module are found."""
    edges = {
        "strop.data.readers": {("strop.objectives", 3)},
        "strop.objectives": {("strop.strategies.base", 7)},
        "strop.strategies.base": {("strop.strategies.lora", 1)},
        "strop.strategies.lora": {("strop.strategies.base", 2)},
    }
    assert upward_imports(edges) == [
        "strop.data.readers:3 imports strop.objectives (strop.strategies floor)",
        "strop.objectives:7 imports strop.strategies.base (strop.strategies floor, sideways)",
    ]
    assert cycles(edges) == [["strop.strategies.base", "strop.strategies.lora"]]
    with pytest.raises(AssertionError, match="strop_extra: on no floor"):
        area_of("strop_extra")


def test_relative_and_function_level_imports_count(tmp_path):
    module = tmp_path / "strop" / "train" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text("from . import loop\n\ndef f():\n    from strop.cli import main\n")
    known = {"strop.train.x": module, "strop.train.loop": module, "strop.cli": module, "strop.train": module}
    assert imports_of("strop.train.x", module, known) == {("strop.train.loop", 1), ("strop.cli", 4)}
