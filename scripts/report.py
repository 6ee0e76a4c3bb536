#!/usr/bin/env python
"""One report of the newest finished run of every stage under --out (T2.13 and the Task 1/3 results).

Collects, per stage, its explanation or table (with the conclusion written by the stage from its numbers),
and writes the table of all Task 2 experiments (experiments.md/csv) next to report.md under
results/report/<timestamp>/. Stages that have not run are listed as such.
"""
import re, sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fastcore.script import call_parse

from lab.runs import latest_stage_summary, stage_dir
from lab.stages import experiments_table

# stage folder -> (section title, the file that tells its result)
SECTIONS = {'task1/variance': ('Task 1.2: layer-3 weight variance and GAP activations', 'explanation.md'),
            'task1/gradients': ('Task 1.4: gradients through depth', 'explanation.md'),
            'stage2_baseline': ('Stage 2: baseline', 'table.md'),
            'stage3_1_channels': ('Stage 3.1: channels', 'table.md'),
            'stage3_2_blocks': ('Stage 3.2: blocks', 'table.md'),
            'stage3_3_activations': ('Stage 3.3: activations', 'table.md'),
            'stage4_final': ('Stage 4: final model on the test set', 'final.md'),
            'task3_classifier128': ('Task 3.1: 128 px classifier', 'table.md'),
            'task3_unet': ('Task 3.2: baseline U-Net', 'table.md'),
            'task3_unet_backbone': ('Task 3.3: U-Net on the classifier backbone', 'table.md')}


@call_parse
def main(out: str = 'results',  # results folder to read, and to write the report into
         data: str = None,  # unused: the report reads results only
         quick: bool = False):  # unused: the report trains nothing
    parts, missing = ['# Lab report\n'], []
    with stage_dir(out, 'report') as folder:
        for stage, (title, name) in SECTIONS.items():
            summary = latest_stage_summary(out, stage)
            if summary is None: missing.append(stage); continue
            files = sorted(Path(summary['path']).glob(name))
            body = '\n'.join(f.read_text() for f in files) if files else summary.get('conclusion', '')
            body = re.sub(r'^(#+) ', r'##\1 ', body, flags=re.M)  # the stage's own headings nest under its section
            parts.append(f"## {title}\n\nFrom `{summary['path']}` (data: {summary.get('data_source', 'see config')}, "
                         f"profile: {summary.get('profile', '-')}).\n\n{body}\n")
        try:
            experiments_table(out, folder)
            parts.append('## All Task 2 experiments (T2.13)\n\n' + (folder / 'experiments.md').read_text().split('\n', 2)[2])
        except FileNotFoundError as e:
            parts.append(f'## All Task 2 experiments (T2.13)\n\n{e}\n')
        if missing: parts.append('## Not run yet\n\n' + '\n'.join(f'- {m}' for m in missing) + '\n')
        (folder / 'report.md').write_text('\n'.join(parts))
    print('\n'.join(parts)[:3000])
