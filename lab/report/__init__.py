"""The lab's report: one document of the newest finished run of every stage, as REPORT.md and a self-contained
REPORT.html.

`write_report(out)` reads ``<out>/<stage>/<timestamp>/`` folders (never trains), and writes REPORT.md, REPORT.html and
the table of all Task 2 experiments (experiments.md/csv) into ``<out>/report/<timestamp>/`` (`lab.results.stage_dir`),
then copies REPORT.md and REPORT.html to ``<out>/``. The sections follow the assignment: Task 1 (variance, gradients),
Task 2 (baseline, 3.1, 3.2, 3.3, final with its recipe ablation, all experiments), Task 3 (128 px classifier, U-Net,
backbone U-Net). Each section gives where its numbers come from (results folder, data folder and source, profile,
seeds), the design as read from the runs' own recipes (models rebuilt with `fastai_lab.models.build_model` to count their
parameters), its table, its figures and the conclusion its stage computed. Sections on other data, profiles or seeds
than the others are flagged; a section whose stage has not finished says 'not run yet'.

Figures are relative links in REPORT.md (each copy gets the links that resolve from where it lies) and base64 data
URIs in REPORT.html, which therefore opens offline, anywhere. Markdown is rendered to HTML with markdown-it-py.

The parts: `find` (the sections, the runs they report on and their provenance warnings), `describe` (a run's model,
training and data in words, from its recipe), `blocks` (the pieces of a section), `sections` (each section and
`build_report`), `render` (the blocks as Markdown, the Markdown as a self-contained HTML page); `write_report` here
ties them together.
"""
from pathlib import Path

from ..io import write_text
from ..results import stage_dir
from .blocks import Figure
from .find import SECTIONS, SectionSpec, Found, find_section, collect, provenance_warnings
from .describe import (augment_descriptions, describe_resnet, describe_unet, describe_backbone, describe_training,
                       describe_data)
from .sections import build_report
from .render import render_markdown, markdown_to_html, image_links

__all__ = ['SECTIONS', 'SectionSpec', 'Figure', 'Found', 'find_section', 'collect', 'provenance_warnings',
           'augment_descriptions', 'describe_resnet', 'describe_unet', 'describe_backbone', 'describe_training',
           'describe_data', 'build_report', 'render_markdown', 'markdown_to_html', 'write_report', 'image_links']


def write_report(out):
    """Write REPORT.md, REPORT.html and experiments.md/csv into ``<out>/report/<timestamp>/`` and copy REPORT.md and
    REPORT.html to ``<out>/``, each copy with figure links that resolve from where it lies. Returns their paths and
    the sections' `Found`."""
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"{out}: no such results folder (run the experiments first, or pass --out)")
    with stage_dir(out, 'report') as folder:
        blocks, found = build_report(out, folder)
        text = render_markdown(blocks, folder)
        page = markdown_to_html(text, folder)
        write_text(folder / 'REPORT.md', text)
        write_text(folder / 'REPORT.html', page)
    final = folder.parent / folder.name[1:].removesuffix('.partial')  # stage_dir publishes the folder under this name
    moved = lambda f: Figure(final / Path(f.path).relative_to(folder), f.caption, f.look) if Path(f.path).is_relative_to(
        folder) else f  # figures drawn into the report's own folder (T2.13's) now lie under its published name
    blocks = [[moved(f) for f in b] if isinstance(b, list) else b for b in blocks]
    top_md = write_text(out / 'REPORT.md', render_markdown(blocks, out))
    top_html = write_text(out / 'REPORT.html', page)
    return dict(folder=final, md=final / 'REPORT.md', html=final / 'REPORT.html', top_md=top_md, top_html=top_html,
                found=found)
