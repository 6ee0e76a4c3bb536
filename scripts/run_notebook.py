#!/usr/bin/env python
"""Execute a notebook top to bottom with nbclient, as CI does for the tour (default: nbs/tour.ipynb), in its folder.

  python scripts/run_notebook.py [NOTEBOOK] [--timeout 600] [--out executed.ipynb]

A cell that raises fails the run (exit 2, naming the cell); the stored notebook is not changed (its outputs stay
cleared); `--out` writes the executed copy, outputs included.
"""
import os
from pathlib import Path

from fastai_lab.cli import script

HERE = Path(__file__).resolve().parent


def flags(p):
    p.add_argument('notebook', nargs='?', default=str(HERE.parent / 'nbs' / 'tour.ipynb'), help='the notebook to run')
    p.add_argument('--timeout', type=int, default=600, help='seconds a cell may take')
    p.add_argument('--out', default=None, help='write the executed notebook here')


def run(args):
    import time
    try: import nbformat; from nbclient import NotebookClient; from nbclient.exceptions import CellExecutionError
    except ImportError: raise ImportError("the notebook runner needs nbclient (pip install -r requirements-nb.txt)") from None
    path = Path(args.notebook)
    if not path.is_file(): raise FileNotFoundError(f"{path}: no such notebook")
    nb = nbformat.read(path, as_version=4)
    os.environ.pop('MPLBACKEND', None)  # CI's Agg would reach the kernel: it draws inline, as in Jupyter
    t0 = time.perf_counter()
    try: NotebookClient(nb, timeout=args.timeout, kernel_name='python3',
                        resources={'metadata': {'path': str(path.parent)}}).execute()
    except CellExecutionError as e:
        raise RuntimeError(f"{path}: a cell failed: {str(e).strip().splitlines()[-1]}") from None
    if args.out: nbformat.write(nb, args.out)
    figures = sum('image/png' in o.get('data', {}) for c in nb.cells if c.cell_type == 'code' for o in c.outputs)
    print(f"{path}: {sum(c.cell_type == 'code' for c in nb.cells)} code cells ran in {time.perf_counter() - t0:.0f} s, "
          f"{figures} figures drawn")


main = script(run, flags)
if __name__ == '__main__': main()
