"""The experiments, one script each (`python scripts/<name>.py --help`). They are run, not installed: run_all.py runs
each by its path in its one process (`fastai_lab.cli.run_script`); the tests import them from the checkout."""
