"""The tour notebook is stored as CI runs it: outputs cleared, short, on the lab's own API (CI executes it:
scripts/run_notebook.py in .ci/run)."""
import json
from pathlib import Path

NB = Path(__file__).resolve().parents[1] / 'nbs' / 'tour.ipynb'


def test_tour_is_stored_clean_and_short():
    nb = json.loads(NB.read_text())
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    assert len(nb['cells']) < 30 and code
    assert all(c['outputs'] == [] and c['execution_count'] is None for c in code)  # stored with outputs cleared
    source = '\n'.join(''.join(c['source']) for c in code)
    for step in ('show_batch', 'learn.summary()', 'lr_find', 'show_results', 'ClassificationInterpretation',
                 'BackboneUNet', 'slice(1e-5, 1e-4)', 'trainable_only=True', 'backward_probe', 'activation_profile'):
        assert step in source, step
    assert 'from fastai_lab' in source and 'sys.path' not in source


def test_ci_runs_the_tests_then_the_notebook():
    ci = (NB.parents[1] / '.ci' / 'run').read_text()
    test, tour = ci.index('pip install -r requirements.txt && python -m pytest'), ci.index('scripts/run_notebook.py')
    assert test < tour and 'requirements-nb.txt' in ci
