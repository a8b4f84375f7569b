"""The package's imports form a tree of levels: no module imports, even inside a function, one that imports it back."""

import ast
from pathlib import Path

import vitlab

PACKAGE_DIR = Path(vitlab.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def vitlab_imports(path: Path, modules: set[str]) -> set[str]:
    """Every vitlab module that `path` imports anywhere: top level, functions, `if __name__` blocks."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from vitlab.weights import npz` imports the module vitlab.weights.npz
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE_DIR.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): vitlab_imports(path, modules) - {module_name(path)} for path in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of modules that import each other in a circle, or None (depth-first search)."""
    state: dict[str, str] = {}  # module -> "open" while on the current path, "done" once fully explored

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                return path[path.index(imported) :] + [imported]
            if imported not in state and (cycle := visit(imported, [*path, imported])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "vitlab.weights.load" in graph["vitlab.factory"]  # imported inside create_model
    assert "vitlab.hybrid" in graph["vitlab.factory"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_subpackages_only_describe_themselves():
    # Importing vitlab.weights.fetch (from the download command) must not pull in the model or torch files.
    # `configs/` is the exception: its __init__ gathers the public names of its own parts (`from vitlab.configs
    # import VITConfig`), none of which imports anything else of vitlab's.
    modules = set(import_graph())
    for init in PACKAGE_DIR.glob("*/__init__.py"):
        if init.parent.name != "configs":
            assert not vitlab_imports(init, modules), init


def test_configs_import_only_configs_files_and_the_model():
    # A config is made before anything heavy: no weights/, no data (vitlab.files and vitlab.errors are the
    # standard library only); vitlab.model gives ModelConfig the ViT's fields and imports nothing of vitlab's.
    graph = import_graph()
    for module, imported in graph.items():
        if module.startswith("vitlab.configs"):
            outside = {name for name in imported if not name.startswith("vitlab.configs.")}
            assert outside <= {"vitlab.files", "vitlab.errors", "vitlab.model"}, module
    assert graph["vitlab.model"] == set()


def test_errors_import_nothing_of_vitlab():
    # Every module raises vitlab's own errors, so the module that defines them must sit below all of them.
    assert import_graph()["vitlab.errors"] == set()


def long_definitions(limit: int) -> list[str]:
    """Every function and class in the package longer than `limit` lines, as "module:name (lines)"."""
    found = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{module_name(path)}:{node.name} ({length})")
    return found


def test_functions_and_classes_fit_on_a_few_screens():
    assert long_definitions(150) == []


def test_modules_stay_readable_in_one_sitting():
    lines = {module_name(path): len(path.read_text().splitlines()) for path in PACKAGE_DIR.rglob("*.py")}
    assert {name: n for name, n in lines.items() if n > 600} == {}
    configs = {name: n for name, n in lines.items() if name.startswith("vitlab.configs") and n > 400}
    assert configs == {}


def test_the_trainer_imports_no_command_above_it():
    """vitlab/training/ is below the commands: it takes precision from vitlab.precision, not from evaluate or bench."""
    graph = import_graph()
    above = {"vitlab.evaluate", "vitlab.bench", "vitlab.bench_precision", "vitlab.measure", "vitlab.train"}
    upward = {name: graph[name] & above for name in graph if name.startswith("vitlab.training")}
    assert {name: found for name, found in upward.items() if found} == {}
