#!/usr/bin/env python
"""One report of the newest finished run of every stage under --out: REPORT.md and a self-contained REPORT.html.

In the assignment's order: Task 1 (variance, gradients), Task 2 (baseline, 3.1, 3.2, 3.3, the final model with its
recipe ablation, the table of all experiments, T2.13), Task 3 (128 px classifier, U-Net, backbone U-Net). Each section
names its results folder, data (folder and source), profile and seeds, describes the design from the runs' recipes,
and gives its table, figures and the conclusion its stage computed; sections on other data, profiles or seeds are
flagged, and stages not run yet say so. Writes <out>/report/<timestamp>/ (REPORT.md, REPORT.html, experiments.md/csv)
and copies REPORT.md and REPORT.html to <out>/. REPORT.html embeds its figures, so it opens offline, anywhere.
The report trains nothing (see lab/report/).
"""
from fastai_lab.cli import script
from fastai_lab.report import write_report


def flags(p):
    p.add_argument('--out', default='results', help='results folder to read, and to write the report into')


def run(args):
    "Write REPORT.md and REPORT.html of the newest finished run of every stage under --out."
    written = write_report(args.out)
    found = written['found']
    missing = [f.spec.stage for f in found if not f.ran]
    print(f"report: {written['top_md']} and {written['top_html']} (also in {written['folder']}); "
          f"{len(found) - len(missing)} of {len(found)} sections run"
          + (f"; not run yet: {', '.join(missing)}" if missing else ''))
    return written


main = script(run, flags)
if __name__ == '__main__': main()
