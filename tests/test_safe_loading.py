"""The loading rules, checked on the source: safetensors for weights, weights_only torch.load,
no trust_remote_code, safe YAML, no pickle (not even imported under another name), no strict=False
that hides missing keys."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    p for folder in ("siglip2_dense", "heads", "tools", "benchmarks") for p in (ROOT / folder).rglob("*.py")
)


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def call_name(node: ast.Call) -> str:
    func = node.func
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def keyword(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value
    return None


UNPICKLING_MODULES = ("pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal")


def unsafe_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """Imports that unpickle under another name (``import pickle as p``, ``from torch import load``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in UNPICKLING_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in UNPICKLING_MODULES:
                found.append((node.lineno, node.module))
            elif node.module in ("torch", "torch.serialization") and any(a.name == "load" for a in node.names):
                found.append((node.lineno, f"{node.module}.load"))
    return found


# What a module may use of ``pickle``: writing, and Python's documented way to read one safely, an
# Unpickler subclass whose ``find_class`` allows named globals only ("Restricting Globals" in the pickle docs).
PICKLE_WRITING = {"dump", "dumps", "HIGHEST_PROTOCOL", "PicklingError"}
PICKLE_RESTRICTED_READING = {"Unpickler", "UnpicklingError"}


def restricts_globals(tree: ast.AST) -> bool:
    """Whether every ``pickle.Unpickler`` of the module is subclassed with its own ``find_class``."""
    return any(isinstance(node, ast.ClassDef)
               and any(ast.unparse(base) == "pickle.Unpickler" for base in node.bases)
               and any(isinstance(item, ast.FunctionDef) and item.name == "find_class" for item in node.body)
               for node in ast.walk(tree))


def pickle_is_used_safely(tree: ast.AST) -> bool:
    """``import pickle`` only to write, or to read through an Unpickler that restricts globals."""
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pickle"}
    if used <= PICKLE_WRITING:
        return True
    return used <= PICKLE_WRITING | PICKLE_RESTRICTED_READING and restricts_globals(tree)


def violations(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for line, name in unsafe_imports(tree):
        if name == "pickle" and pickle_is_used_safely(tree):
            continue
        found.append(f"{path.relative_to(ROOT)}:{line}: imports {name}, which can unpickle arbitrary objects")
    for node in calls(tree):
        name = call_name(node)
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        if name.endswith("torch.load"):
            value = keyword(node, "weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        value = keyword(node, "trust_remote_code")
        if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
            found.append(f"{where}: trust_remote_code is not literally False")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            loader = keyword(node, "Loader")
            if not (isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")):
                found.append(f"{where}: {name} without the safe loader")
        if name in ("pickle.load", "pickle.loads", "dill.load", "numpy.load", "np.load"):
            allow = keyword(node, "allow_pickle")
            if name.startswith(("pickle", "dill")) or (allow is not None and not (
                    isinstance(allow, ast.Constant) and allow.value is False)):
                found.append(f"{where}: {name} can unpickle arbitrary objects")
        saved = ast.unparse(node.args[0]).lower() if node.args else ""
        if name.endswith("torch.save") and not any(word in saved for word in ("optim", "sched")):
            found.append(f"{where}: torch.save of something that is not optimizer or scheduler state (use safetensors)")
        if name.endswith("load_state_dict"):
            strict = keyword(node, "strict")
            if strict is not None and not (isinstance(strict, ast.Constant) and strict.value is True):
                found.append(f"{where}: load_state_dict(strict=...) that may hide missing keys")
    return found


def test_sources_exist():
    assert len(SOURCES) > 5, "the scan must see the package"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_loading(path):
    assert violations(path) == []


def test_the_scan_catches_each_rule(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import torch, yaml, pickle\n"
        "torch.load('x')\n"
        "torch.load('x', weights_only=False)\n"
        "AutoModel.from_pretrained('x', trust_remote_code=True)\n"
        "yaml.load(open('x'))\n"
        "pickle.load(open('x', 'rb'))\n"
        "model.load_state_dict(sd, strict=False)\n"
        "torch.save(model.state_dict(), 'w.pt')\n"
        "import dill as d\n"
        "from torch import load\n"
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = violations(bad)
    finally:
        ROOT = saved
    assert len(found) == 10, found  # 7 calls, and the imports of pickle, dill and torch.load


def test_pickle_may_be_imported_to_write_or_to_read_with_restricted_globals(tmp_path):
    writer = "import pickle\ndata = pickle.dumps({'a': 1}, protocol=2)\n"
    restricted = ("import pickle\nclass Only(pickle.Unpickler):\n    def find_class(self, module, name):\n"
                  "        raise pickle.UnpicklingError(name)\nOnly(open('x', 'rb')).load()\n")
    unrestricted = "import pickle\nclass Any(pickle.Unpickler):\n    pass\nAny(open('x', 'rb')).load()\n"
    plain = "import pickle\nloaded = pickle.loads(b'')\n"
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        results = {}
        for name, text in (("writer", writer), ("restricted", restricted), ("unrestricted", unrestricted),
                           ("plain", plain)):
            (tmp_path / f"{name}.py").write_text(text)
            results[name] = violations(tmp_path / f"{name}.py")
    finally:
        ROOT = saved
    assert results["writer"] == [] and results["restricted"] == []
    assert len(results["unrestricted"]) == 1 and "imports pickle" in results["unrestricted"][0]
    assert len(results["plain"]) == 2  # the import and the pickle.loads call
