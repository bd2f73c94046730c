"""The package layout the code relies on: no import cycles, data flows pool -> packet -> bench."""

from __future__ import annotations

import ast
from pathlib import Path

import turbomem

PACKAGE = Path(turbomem.__file__).resolve().parent
POOL_ALIASES = {"turbomem.net", "turbomem.pcap", "turbomem.parse", "turbomem.pipeline"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _python_imports_of_pyx(text: str) -> str:
    """The Python-level import statements of a Cython file (cimports left out), as Python source."""
    out, pending = [], None
    for line in text.splitlines():
        if pending is not None:
            pending.append(line)
        elif line.startswith(("import ", "from ")) and " cimport " not in line:
            pending = [line]
        else:
            continue
        statement = "\n".join(pending)
        if statement.count("(") == statement.count(")"):
            out.append(statement)
            pending = None
    return "\n".join(out)


def _imports() -> dict[str, set[str]]:
    """Each turbomem module -> the turbomem modules it imports (at any depth in the file)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules.update({_module_name(p): p for p in PACKAGE.rglob("*.pyx")})
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if path.suffix == ".pyx":
            tree = ast.parse(_python_imports_of_pyx(path.read_text()))
        else:
            tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                # `from pkg import submodule` depends on the submodule, not on
                # pkg/__init__ (which Python has already started importing).
                targets = submodules or [base]
            else:
                continue
            ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
            found.update(t for t in targets if t in modules and t != name and t not in ancestors)
        graph[name] = found
    return graph


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_pool_never_imports_packet_or_bench():
    graph = _imports()
    for name, targets in graph.items():
        if name.startswith(("turbomem.packet", "turbomem.bench")) or name in POOL_ALIASES:
            continue
        if name == "turbomem.__main__":
            # `python -m turbomem bench` hands over to the bench CLI (imported on demand).
            targets = targets - {"turbomem.bench", "turbomem.bench.cli"}
        wrong = sorted(t for t in targets if t.startswith(("turbomem.packet", "turbomem.bench")))
        assert not wrong, f"{name} imports {wrong}"


def test_packet_never_imports_bench():
    for name, targets in _imports().items():
        if name.startswith("turbomem.packet"):
            assert not [t for t in targets if t.startswith("turbomem.bench")], name


def test_old_module_names_are_the_new_modules():
    import turbomem.net
    import turbomem.packet.io
    import turbomem.packet.parse
    import turbomem.packet.pcap
    import turbomem.packet.pipeline
    import turbomem.parse
    import turbomem.pcap
    import turbomem.pipeline

    assert turbomem.net is turbomem.packet.io
    assert turbomem.pcap is turbomem.packet.pcap
    assert turbomem.parse is turbomem.packet.parse
    assert turbomem.pipeline is turbomem.packet.pipeline


def test_ctypes_only_in_sys():
    users = [p for p in PACKAGE.rglob("*.py")
             if "import ctypes" in p.read_text() and p.name != "_sys.py" and "bench" not in p.parts]
    assert not users, users
