"environment.yml and requirements.txt describe the same environment; .ci/run runs the README's test command."
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def requirements():
    lines = (ROOT / 'requirements.txt').read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.lstrip().startswith('#')]


def test_conda_environment_installs_the_pinned_requirements():
    env = yaml.safe_load((ROOT / 'environment.yml').read_text())
    deps = env['dependencies']
    assert 'python=3.11' in deps and 'pip' in deps
    pip = next(d['pip'] for d in deps if isinstance(d, dict) and 'pip' in d)
    assert pip == ['-r requirements.txt']  # one list of packages, kept in requirements.txt
    # nothing conda installs besides python and pip could disagree with the pins
    assert all(isinstance(d, dict) or d.split('=')[0] in ('python', 'pip') for d in deps)


def test_requirements_pin_the_checked_stack():
    reqs = requirements()
    for pin in ('torch==2.14.1', 'torchvision==0.29.1', 'fastai==2.8.12'):
        assert pin in reqs
    names = {re.split(r'[=<>~!\[ ]', r)[0].lower() for r in reqs}
    assert {'timm', 'matplotlib', 'pandas', 'scikit-learn', 'pillow', 'pytest'} <= names


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / 'README.md').read_text()
    command = re.search(r'Run the tests:\n\n```bash\n(.+)\n```', readme).group(1)
    assert command in (ROOT / '.ci' / 'run').read_text()
