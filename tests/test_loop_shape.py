"""The loop stays readable: its size, the five decisions in order in the while body, and no import circle in the
package (each a rule of the issue that made the loop what it is; a change that breaks one says so here)."""
import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent / "trainlab"
TRAIN = ROOT / "train.py"


def functions():
    tree = ast.parse(TRAIN.read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def lines(node):
    return node.end_lineno - node.lineno + 1


def test_the_loop_function_and_its_body_fit_on_a_screen_or_two():
    fns = functions()
    loop = fns["build_and_train"]
    body = next(n for n in ast.walk(loop) if isinstance(n, ast.While))
    assert lines(loop) <= 120
    assert lines(body) - 1 <= 60
    assert {name: lines(fn) for name, fn in fns.items() if name != "build_and_train" and lines(fn) > 60} == {}


def test_the_five_decisions_are_visible_lines_of_the_body_in_their_order():
    loop = functions()["build_and_train"]
    body = next(n for n in ast.walk(loop) if isinstance(n, ast.While))
    text = ast.get_source_segment(TRAIN.read_text(), body)
    marks = ["out = net(x)", "loss = training_loss(", ".backward()", "= clip(", "scaler.step(opt)", "schedule.step()"]
    where = [text.find(m) for m in marks]
    assert all(i >= 0 for i in where), dict(zip(marks, where))
    assert where == sorted(where)


def import_graph():
    modules = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {m: set() for m in modules}
    for m, f in modules.items():
        for node in ast.walk(ast.parse(f.read_text())):  # function-level imports count too
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trainlab"):
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                while name not in modules and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in modules and name not in (m, "trainlab"):
                    graph[m].add(name)
    return graph


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, out = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while comp[-1:] != [v]:
                comp.append(stack.pop())
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
