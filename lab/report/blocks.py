"""The pieces of the report's sections: a section's data, training and design lines, its figures, number formats,
Markdown embedded from a results folder, its provenance header, the 'not run yet' block, and the report-wide table of
where the numbers come from. `sections` builds each section from them."""
import math, os, re
from dataclasses import dataclass
from pathlib import Path

from ..tables import markdown_rows


@dataclass(frozen=True)
class Figure:
    "An image of a results folder and its caption; rendered as a relative link (Markdown) or a data URI (HTML)."
    path: Path
    caption: str


def _epochs(n): return f"{n} epoch{'' if n == 1 else 's'}"


def _fig(folder, name, caption):
    path = Path(folder) / name if folder else None
    return Figure(path, caption) if path and path.is_file() else None


def _figs(*figs): return [f for f in figs if f is not None]


def _pct(v): return '-' if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def _num(v, digits=3):
    if v is None or (isinstance(v, float) and math.isnan(v)): return '-'
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _epoch(v):
    "A best epoch (a mean over seeds), counted from 0 as everywhere in the lab: '3', or '3.5' for a mean."
    if v is None or (isinstance(v, float) and math.isnan(v)): return '-'
    v = float(v)
    return str(int(v)) if v == int(v) else f"{v:.1f}"


def _embed(path, drop_title=True, level=4):
    "A Markdown file of a results folder, its title dropped (or demoted) so it nests under the section."
    path = Path(path)
    if not path.is_file(): return None
    text = path.read_text().strip()
    if drop_title and text.startswith('# '):
        title, _, text = text.partition('\n')
        text = f"**{title[2:].strip()}**\n\n{text.strip()}"
    return re.sub(r'^(#+) ', lambda m: '#' * min(6, len(m.group(1)) + level - 1) + ' ', text, flags=re.M)


def _rel_out(out, path):
    try: return Path(os.path.relpath(Path(path).resolve(), Path(out).resolve())).as_posix()
    except ValueError: return str(path)


def _header(out, found, per_warnings):
    "The section's provenance line and its warnings."
    f = found
    bits = [f"Spec {f.spec.spec}", f"results `{_rel_out(out, f.folder)}`"]
    if f.profile: bits.append(f"profile {f.profile}")
    if f.seeds is not None:
        bits.append(f"seeds {', '.join(map(str, f.seeds)) if isinstance(f.seeds, list) else f.seeds}")
    if f.summary.get('epochs') is not None: bits.append(_epochs(f.summary['epochs']))
    if f.spec.data: bits.append(f"data `{f.data_path}` ({f.source or 'unknown source'})")
    elif f.source: bits.append(f"inputs: {f.source}")
    items = ['*' + '; '.join(bits) + '.*']
    items += [f"> **Warning:** {w}" for w in per_warnings.get(f.spec.stage, [])]
    items += [f"> **Caveat:** {c}." for c in f.summary.get('caveats') or []]  # what its data cannot support
    if f.newer:
        items.append("> Note: newer invocations of this stage did not finish and are not shown: "
                     + ', '.join(f"`{n}` ({s})" for n, s in f.newer) + '.')
    return items


def _not_run(out, found):
    spec = found.spec
    script = {'task1/variance': 'task1_variance', 'task1/gradients': 'task1_gradients'}.get(spec.stage, spec.stage)
    text = (f"**Not run yet**: no finished `{spec.stage}` run under `{out}` (spec {spec.spec}); "
            f"`python scripts/{script}.py --out {out}` runs it.")
    if found.newer:
        text += ' Unfinished invocations: ' + ', '.join(f"`{n}` ({s})" for n, s in found.newer) + '.'
    return [text]


def _provenance(out, found, general):
    rows = []
    for f in found:
        if not f.ran: rows.append([f.spec.title, 'not run yet', '-', '-', '-', '-']); continue
        data = f"`{f.data_path}`" if f.spec.data else (f.source or '-')
        rows.append([f.spec.title, f"`{_rel_out(out, f.folder)}`", data, f.source if f.spec.data else '-',
                     f.profile or '-', ', '.join(map(str, f.seeds)) if isinstance(f.seeds, list) else str(f.seeds)])
    items = ['## Where the numbers come from',
             markdown_rows(['section', 'results', 'data', 'source', 'profile', 'seeds'], rows)]
    items += ([f"> **Warning:** {w}" for w in general]
              or ['All finished sections ran on the same data, profile and seeds.'])
    synthetic = [f.spec.stage for f in found if f.ran and f.source == 'synthetic']
    if synthetic:
        items.append(f"> **Note:** {', '.join(synthetic)} ran on generated stand-in data: their numbers say that "
                     f"the code runs, not how the models do on the real datasets.")
    return items
