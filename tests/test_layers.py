"""The layering of docs/architecture.md, read from the source: each layer imports only the layers
below it, every module of the package is reached from the library's entry points (no test fixture
lives in the package), only mindseg/cli.py turns errors into exit statuses, and no file of the
package is over 400 lines."""
import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# layer -> the other parts of mindseg it may import; predictor, model_zoo, cli and console are the
# top of the package and may import any of it
ALLOWED = {
    "config": set(),
    "runtime": {"config"},
    "models": {"config"},
    "dataset": {"config"},
    "utils": {"config", "runtime", "models"},
    "engine": {"config", "runtime", "models", "dataset", "utils"},
}


def _module_name(path):
    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def _imports(path):
    """Names of the modules (and ``module.attribute``) that ``path`` imports, relative imports
    resolved, plus ``mindseg.*`` strings (the lazy public names of mindseg/__init__.py)."""
    package = _module_name(path)
    if not path.endswith("__init__.py"):
        package = package.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(parts + ([node.module] if node.module else []))
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith("mindseg."):
            names.add(node.value)
    return names


def _package_modules():
    return {_module_name(p): p for p in glob.glob(os.path.join(ROOT, "mindseg", "**", "*.py"),
                                                  recursive=True)}


def test_each_layer_imports_only_the_layers_below_it():
    modules = _package_modules()
    parts = {m.split(".")[1] for m in modules if "." in m}  # mindseg's subpackages and modules
    wrong = []
    for module, path in modules.items():
        layer = module.split(".")[1] if "." in module else None
        if layer not in ALLOWED:
            continue
        for name in _imports(path):
            target = name.split(".")[1] if name.startswith("mindseg.") else None
            if target in parts and target != layer and target not in ALLOWED[layer]:
                wrong.append(f"{os.path.relpath(path, ROOT)} imports {name}")
    assert not wrong, "\n".join(sorted(wrong))


def test_every_package_module_is_used_by_the_library():
    """Reached by imports from ``import mindseg``'s public names, the console scripts, the entry
    scripts or scripts/; a module only the tests import belongs under tests/."""
    modules = _package_modules()
    graph = {m: {n for n in _imports(p) if n in modules} for m, p in modules.items()}
    roots = {"mindseg", "mindseg.console"}
    for path in glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "scripts", "*.py")):
        roots |= {n for n in _imports(path) if n in modules}
    reached, todo = set(), list(roots)
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            parts = module.split(".")
            todo += [".".join(parts[:i]) for i in range(1, len(parts))] + sorted(graph[module])
    assert sorted(set(modules) - reached) == []


def test_only_the_cli_exits():
    """Library code raises; mindseg/cli.py alone turns an error into a message and an exit status."""
    exits = []
    for module, path in _package_modules().items():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "exit" and module != "mindseg.cli":
                exits.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert exits == []


def test_no_package_file_is_over_400_lines():
    lengths = {os.path.relpath(p, ROOT): sum(1 for _ in open(p, encoding="utf-8"))
               for p in _package_modules().values()}
    assert {path: n for path, n in lengths.items() if n > 400} == {}
