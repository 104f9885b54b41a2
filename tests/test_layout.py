"""The package's layout: imports run one way, down the floors listed in mcqtune/__init__.py; no module imports
another in a circle; the library never imports a root script; the root holds only thin entry points."""

import ast
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "mcqtune"
ROOT_SCRIPTS = {"train_sft", "train_grpo", "infer", "mcq_dataset", "answer_parser", "export", "ensemble", "demo"}
# Lower floors first; a module may import its own floor's modules (without a circle) and any floor below.
JOBS = {"mcqtune.infer", "mcqtune.train", "mcqtune.grpo", "mcqtune.ensemble", "mcqtune.export"}
FLOORS = [
    {"mcqtune", "mcqtune.errors", "mcqtune.config_files", "mcqtune.files"},
    {"mcqtune.data", "mcqtune.tiny"},
    {"mcqtune.runs"},
    {"mcqtune.reporting"},
    {"mcqtune.model"},
    {"mcqtune.core"},
    {"mcqtune.training"},
    JOBS,  # side by side: none imports another (test_jobs_never_import_each_other)
    {"mcqtune.demo"},
    {"mcqtune.cli", "mcqtune.__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module of the package or the root that ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")).with_suffix(".py")
                         .is_file() or (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")).is_dir())
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.split(".")[0] == "mcqtune" or m in ROOT_SCRIPTS}


def floor_of(module: str) -> int:
    best = None
    for level, names in enumerate(FLOORS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > best[1]):
                best = (level, len(name))
    assert best is not None, f"{module} is on no floor: add it to FLOORS"
    return best[0]


GRAPH = {module_name(p): imported_modules(p) - {module_name(p)} for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_on_a_floor():
    for module in GRAPH:
        floor_of(module)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_down_the_floors(module):
    upward = [m for m in GRAPH[module] if m not in ROOT_SCRIPTS and m != "mcqtune" and floor_of(m) > floor_of(module)]
    assert not upward, f"{module} (floor {floor_of(module)}) imports upward: {upward}"


def subpackage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_jobs_never_import_each_other():
    """The jobs stand side by side over the shared layers: a step two jobs need lives below them."""
    crossing = {module: sorted(m for m in GRAPH[module] if subpackage(m) in JOBS - {subpackage(module)})
                for module in GRAPH if subpackage(module) in JOBS}
    assert not {m: c for m, c in crossing.items() if c}


def test_no_private_name_crosses_a_subpackage():
    """A name with a leading underscore is used only inside its own subpackage."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = subpackage(module_name(path))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mcqtune") \
                    and subpackage(node.module) != here:
                offenders += [f"{module_name(path)}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.endswith("__")]
    assert not offenders, offenders


def test_commands_print_only_from_the_cli():
    """A command's argv entry point and its printing live in mcqtune/cli/; library modules log and return
    (errors.py prints the one-line error of every command; the worker modules print their reply to the parent)."""
    allowed = {"mcqtune.errors", "mcqtune.export.llama_worker", "mcqtune.train.fold_worker"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if module.startswith("mcqtune.cli") or module in allowed or module == "mcqtune.__main__":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{module}:{node.lineno} print")
            if isinstance(node, ast.FunctionDef) and node.name in ("main", "cli_main") and node.col_offset == 0:
                offenders.append(f"{module}:{node.lineno} def {node.name}")
    assert not offenders, offenders


WRITING_METHODS = {"write_text", "write_bytes", "to_csv", "to_json", "to_parquet", "savefig", "dump"}


def test_every_file_the_library_writes_goes_through_files_py():
    """One writer for every output (reports, submissions, traces, exports, checkpoints' seals): written beside its
    target and renamed, so no command can leave half a file under a good file's name. Model weights are written by
    the libraries' save_pretrained into folders of their own."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if module_name(path) == "mcqtune.files":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            writes_a_path = name in ("to_csv", "to_json") and (node.args or any(k.arg in ("path_or_buf", "path")
                                                                                 for k in node.keywords))
            opens_to_write = name == "open" and any(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                                    and set(a.value) & set("wax") for a in [*node.args[1:2],
                                                    *[k.value for k in node.keywords if k.arg == "mode"]])
            if (name in WRITING_METHODS - {"to_csv", "to_json"}) or writes_a_path or opens_to_write:
                offenders.append(f"{module_name(path)}:{node.lineno} {name}")
    lock = [o for o in offenders if o.startswith("mcqtune.runs.folder:") and o.endswith(" open")]  # RunLock's file
    assert len(lock) == 1 and set(offenders) == set(lock), offenders


def test_the_library_never_imports_a_root_script():
    offenders = {module: sorted(GRAPH[module] & ROOT_SCRIPTS) for module in GRAPH if GRAPH[module] & ROOT_SCRIPTS}
    assert not offenders, offenders


def test_no_import_circles():
    """Depth-first search over module -> module edges (packages' __init__ files are left out: they import nothing)."""
    edges = {m: {d for d in deps if d in GRAPH and d != "mcqtune" and not (PACKAGE / d.replace("mcqtune.", "")
                                                                           .replace(".", "/")).is_dir()}
             for m, deps in GRAPH.items()}
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_root_holds_only_thin_entry_points():
    scripts = sorted(p.stem for p in ROOT.glob("*.py"))
    assert set(scripts) <= ROOT_SCRIPTS and len(scripts) <= 10, scripts
    for name in scripts:
        tree = ast.parse((ROOT / f"{name}.py").read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{name}.py starts with its usage"
        functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not functions, f"{name}.py defines {[f.name for f in functions]}: code belongs in mcqtune/"


def test_importing_the_package_loads_no_machine_learning_library():
    """`mcq-tune --help` and the lightweight commands stay fast: nothing heavy is imported at module level by the
    package root, any command's module or the CSV contract. (A command selects its backend first: Unsloth must be
    imported before transformers, trl and peft.)"""
    import subprocess

    commands = ", ".join(f"mcqtune.cli.{p.stem}" for p in sorted((PACKAGE / "cli").glob("*.py"))
                         if p.stem != "__init__")
    code = (f"import sys, mcqtune.cli, {commands}, mcqtune.data.questions, mcqtune.core.parser; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'unsloth') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_llama_cpp_is_loaded_only_in_its_child_process():
    """Native code that can crash runs in a child process (export/llama_child.py): only the child's module
    imports llama_cpp, in the library and in the tests."""
    importers = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            if any(n and n.split(".")[0] == "llama_cpp" for n in names):
                importers.append(str(path.relative_to(ROOT)))
    assert sorted(set(importers)) == ["mcqtune/export/llama_worker.py"], importers
