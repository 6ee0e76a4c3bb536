"environment.yml and requirements.txt describe the same environment; .ci/run runs the README's test command."
import re, tomllib
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


def _name(requirement): return re.split(r'[=<>~!\[ ]', requirement)[0].lower()


def test_requirements_pin_the_checked_stack_and_install_the_lab():
    reqs = requirements()
    for pin in ('torch==2.14.1', 'torchvision==0.29.1', 'fastai==2.8.12'):
        assert pin in reqs
    names = {_name(r) for r in reqs}
    assert {'matplotlib', 'pandas', 'scikit-learn', 'pillow', 'pytest', 'timm'} <= names
    assert reqs[-1] == '-e .'  # the lab itself (pyproject.toml), editable, after the pins it must not override
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    declared = {_name(d) for d in project['dependencies'] + project['optional-dependencies']['test']}
    assert declared <= names  # every package the lab declares is pinned or listed in requirements.txt


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / 'README.md').read_text()
    command = re.search(r'Run the tests:\n\n```bash\n(.+)\n```', readme).group(1)
    assert command in (ROOT / '.ci' / 'run').read_text()
