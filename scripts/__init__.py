"""The experiments, one script each (`python scripts/<name>.py --help`). A package, so that run_all.py and the tests
run them in one process (`from scripts import stage2_baseline`)."""
