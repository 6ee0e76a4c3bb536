"""The code's layers, read from the source (ast), under the one import name the lab installs (pyproject.toml's
package-dir: lab/ is fastai_lab, arch/ fastai_lab.arch, data/ fastai_lab.data): no import cycle, the models and the
data import nothing of the training machinery but its base (io, machine), and nothing of the package imports or
loads scripts/ except `fastai_lab.cli.run_script`, which runs one by its path as the shell would."""
import ast, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {'lab': 'fastai_lab', 'arch': 'fastai_lab.arch', 'data': 'fastai_lab.data'}  # folder -> import name
BASE = ('fastai_lab', 'fastai_lab.io', 'fastai_lab.machine')  # what arch/ and data/ may import of the machinery


def modules():
    "module name (as imported) -> its file, for every module of the lab's folders."
    found = {}
    for folder, name in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob('*.py')):
            parts = path.relative_to(ROOT / folder).with_suffix('').parts
            found['.'.join((name, *parts[:-1]) if parts[-1] == '__init__' else (name, *parts))] = path
    return found


def imported(name, path, known):
    "The modules of ours (or under scripts) that `name` imports anywhere in its file, functions included."
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import): targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1] + ([base] if base else []))
            targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in known else base for a in node.names]
        else: continue
        out |= {t for t in targets if t.split('.')[0] in ('fastai_lab', 'scripts')}
    return out - {name}


def graph():
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def cycles(edges):
    "Every import cycle, as a list of module names (Tarjan's strongly connected components of more than one module)."
    index, low, stack, on, found = {}, {}, [], set(), []
    def visit(v):
        index[v] = low[v] = len(index); stack.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in edges: continue
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop(); on.discard(w); component.append(w)
                if w == v: break
            if len(component) > 1: found.append(sorted(component))
    for v in edges:
        if v not in index: visit(v)
    return found


def test_the_lab_imports_without_a_cycle():
    assert cycles(graph()) == []


def test_cycles_are_found():
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]


def test_nothing_in_the_packages_imports_or_loads_the_scripts():
    assert {m: sorted(i) for m, i in graph().items() if any(t.split('.')[0] == 'scripts' for t in i)} == {}
    # nor loads them by path (importlib's spec_from_file_location, runpy), which no import statement shows
    by_path = re.compile(r"""['"]scripts['"/]|spec_from_file_location|runpy""")
    assert [m for m, path in modules().items() if by_path.search(path.read_text())] == ['fastai_lab.cli']
    assert 'def run_script(path, argv)' in modules()['fastai_lab.cli'].read_text()


def test_models_and_datasets_do_not_import_the_training_machinery():
    parts = ('fastai_lab.arch', 'fastai_lab.data')
    def machinery(t): return not t.startswith(parts) and t not in BASE
    lower = {m: sorted(filter(machinery, i)) for m, i in graph().items() if m.startswith(parts)}
    assert {m: i for m, i in lower.items() if i} == {}


def test_the_graph_sees_relative_and_function_level_imports():
    edges = graph()
    assert 'fastai_lab.io' in edges['fastai_lab.results'] and 'fastai_lab.learner' in edges['fastai_lab.train']
    assert 'fastai_lab.data.device' in edges['fastai_lab.data.loaders']  # imported inside build_data


def test_every_script_is_one_cli_main_that_runs_as_a_file():
    "Each script builds `main` with lab.cli.script and calls it when run as a file (`python scripts/<name>.py`)."
    for path in sorted((ROOT / 'scripts').glob('*.py')):
        if path.name == '__init__.py': continue
        text = path.read_text()
        assert re.search(r'^main = script\(', text, re.M), path.name
        assert re.search(r"^if __name__ == '__main__': main\(\)$", text, re.M), path.name
        assert 'call_parse' not in text and 'sys.path' not in text, path.name


def floors(edges):
    "Each module's floor: 1 when it imports none of ours, else one above the highest module it imports."
    floor = {}
    def visit(m):
        if m not in floor: floor[m] = 1 + max((visit(t) for t in edges.get(m, ()) if t in edges), default=0)
        return floor[m]
    for m in edges: visit(m)
    return floor


def scripts_graph():
    "The graph with the scripts in it (`scripts.<name>`: what each imports of the lab)."
    known, edges = modules(), graph()
    for path in sorted((ROOT / 'scripts').glob('*.py')):
        if path.name != '__init__.py': edges[f'scripts.{path.stem}'] = imported(f'scripts.{path.stem}', path, known)
    return edges


def test_floors_are_counted_as_the_longest_chain():
    assert floors({'a': {'b'}, 'b': {'c'}, 'c': set(), 'd': {'c'}}) == {'a': 3, 'b': 2, 'c': 1, 'd': 2}


def test_the_house_is_at_most_8_floors_and_no_module_over_300_lines():
    """A call goes down a shallow stack: scripts -> experiment layer -> run layer -> parts (the import name's mapping
    applied, which ../shared/tools/floors.py, reading folder names, cannot see)."""
    floor = floors(scripts_graph())
    assert max(floor.values()) <= 8, sorted(floor.items(), key=lambda kv: -kv[1])[:12]
    files = list(modules().values()) + [p for p in (ROOT / 'scripts').glob('*.py')]
    assert {p.name: n for p in files if (n := len(p.read_text().splitlines())) > 300} == {}
