"""scripts/report.py (REPORT.md, REPORT.html) on the session's tiny results tree (conftest `results`), and --lr-find
of a training script."""
import json, re, shutil
from pathlib import Path

import pytest

from scripts import report as report_script, stage2_baseline
from fastai_lab.report import SECTIONS, image_links
from fastai_lab.lookup import latest_stage_summary
from fastai_lab.io import read_json, write_json


def report(out):
    "Run scripts/report.py in this process; (REPORT.md text of <out>, the written paths)."
    written = report_script.main(['--out', str(out)])
    return written['top_md'].read_text(), written


def section(text, title):
    "The text of the section titled `title` (up to the next heading of level 2 or 3)."
    start = text.index(f'### {title}\n')
    nxt = re.search(r'^#{2,3} ', text[start + 4:], flags=re.M)
    return text[start: start + 4 + nxt.start()] if nxt else text[start:]


def test_report_order_links_design_and_html(results):
    text, written = report(results['out'])
    folder = written['folder']
    assert folder.parent == results['out'] / 'report' and not folder.name.startswith('.')
    # the assignment's order: Task 1, Task 2 stages, the table of all experiments, Task 3
    titles = [s.title for s in SECTIONS]
    positions = [text.index(f'### {t}\n') for t in titles]
    assert positions == sorted(positions)
    t213 = text.index('### All Task 2 experiments (T2.13)')
    assert text.index('### Stage 4:') < t213 < text.index('### Task 3.1:')
    assert text.index('## Task 1:') < text.index('## Task 2:') < text.index('## Task 3:')

    # every figure link resolves from the file it is in (both copies), and the key figures are there
    copies = {written['top_md']: text, written['md']: written['md'].read_text()}
    for md, body in copies.items():
        links = image_links(body)
        assert links and all(not l.startswith(('/', 'http', 'file:')) for l in links)
        assert all((md.parent / l).is_file() for l in links), [l for l in links if not (md.parent / l).is_file()]
        assert [Path(l).name for l in links] == [Path(l).name for l in image_links(text)]
    names = [Path(l).name for l in image_links(text)]
    for png in ('gap_histogram.png', 'grad_per_layer.png', 'accuracy.png', 'confusion_matrix.png', 'test_samples.png',
                'prediction_0.png', 'test_prediction_0.png'):
        assert png in names, png

    # stages not run say so; the runs that are there carry their data source and profile
    for title in ('Stage 3.1: channels', 'Stage 3.2: blocks per stage', 'Stage 3.3: activations',
                  'Task 3.3: U-Net on the classifier backbone'):
        assert 'Not run yet' in section(text, title)
    base = section(text, 'Stage 2: baseline ResNet')
    assert f"data `{Path(results['tiny']).resolve()}` (synthetic)" in base and 'profile quick' in base
    assert 'All finished sections ran on the same data, profile and seeds.' in text and '**Warning:**' not in text

    # the design comes from the runs' own recipes, with the real numbers
    run = next((results['out'] / 'stage2_baseline').glob('*/baseline-seed0'))
    params = read_json(run / 'config.json')['params']
    assert '3 stages of 4-8-16 channels with 1-1-1 BasicBlocks' in base and f'**{params:,} parameters**' in base
    assert 'images squished to 16x16 px'.lower() in base.lower() and 'augmentation `flip`: Horizontal flips' in base
    assert 'Adam, lr 0.001, weight decay 0; constant learning rate' in base
    final = section(text, 'Stage 4: final model, recipe ablation and test report')
    assert 'AdamW (decoupled weight decay), lr 0.003, weight decay 0.05; one-cycle' in final
    assert 'augmentation `padcrop`: CIFAR-style translation' in final and 'Recipe ablation' in final
    unet_run = next((results['out'] / 'task3_unet').glob('*/unet-seed0'))
    unet = section(text, 'Task 3.2: baseline U-Net')
    assert 'widths 8-16-32-64-128' in unet and f"**{read_json(unet_run / 'config.json')['params']:,} parameters**" in unet
    assert "data `" in unet and '(synthetic)' in unet
    c128 = section(text, 'Task 3.1: 128 px classifier')
    assert 'stem 3x3 conv, stride 2' in c128 and '4-8-16-32 channels' in c128
    experiments = section(text, 'All Task 2 experiments (T2.13)')
    assert '| Baseline | Baseline |' in experiments and '| Final | Final |' in experiments
    assert (folder / 'experiments.csv').is_file()

    # the HTML: the same figures, every one inlined, nothing fetched from elsewhere
    page = written['top_html'].read_text()
    assert page == written['html'].read_text()
    sources = re.findall(r'<img[^>]* src="([^"]*)"', page)
    assert len(sources) == len(image_links(text)) and all(s.startswith('data:image/png;base64,') for s in sources)
    assert not re.search(r'(src|href)="(?!data:)[^"#]', page) and '<table>' in page and '<h3>Stage 4:' in page
    # every table scrolls sideways in its own box; every figure has a caption line saying what to look at
    assert page.count('<table>') == page.count('<div class="scroll">\n<table>') > 0
    captions = re.findall(r'^\d+\. \*.*\*(?:: look at .*)?\.$', text, flags=re.M)
    assert len(captions) == len(image_links(text))
    assert all(': look at ' in c for c in captions), [c for c in captions if ': look at ' not in c]


def test_report_warns_when_sections_ran_on_other_data(results, tmp_path):
    out = tmp_path / 'out'
    shutil.copytree(results['out'], out, ignore=shutil.ignore_patterns('report', 'REPORT.*'))
    # a stage 3.1 folder that ran on other data and another profile (the baseline's run, relabelled)
    src = next((out / 'stage2_baseline').glob('2*'))
    other = out / 'stage3_1_channels' / src.name
    shutil.copytree(src, other)
    summary = read_json(other / 'summary.json')
    summary.update(stage='stage3_1_channels', profile='full',
                   data_key=dict(summary['data_key'], data='/elsewhere/tiny-imagenet-200', profile='full'))
    write_json(other / 'summary.json', summary)
    # and a newer stage 2 invocation that did not finish: noted, not used
    newer = out / 'stage2_baseline' / '29990101-000000'; newer.mkdir()
    write_json(newer / 'stage.json', dict(status='interrupted'))

    text, _ = report(out)
    odd = section(text, 'Stage 3.1: channels')
    assert '**Warning:** ran on other data than the other Tiny ImageNet sections' in odd
    assert "'/elsewhere/tiny-imagenet-200' here" in odd and 'profile full here, quick in most other sections' in odd
    head = text[:text.index('## Task 1:')]
    assert 'The Tiny ImageNet sections ran on different data' in head and 'stage3_1_channels' in head
    assert 'Sections ran with different profile' in head
    base = section(text, 'Stage 2: baseline ResNet')
    assert '**Warning:**' not in base and '`29990101-000000` (interrupted)' in base
    assert '**Warning:**' not in section(text, 'Task 3.2: baseline U-Net')  # the moon sections agree among themselves


def test_report_of_an_empty_folder_and_a_missing_one(tmp_path, capsys):
    text, written = report(tmp_path)
    assert text.count('**Not run yet**') == len(SECTIONS) + 1  # every section and the T2.13 table
    assert image_links(text) == [] and '<img' not in written['top_html'].read_text()
    with pytest.raises(SystemExit) as e: report_script.main(['--out', str(tmp_path / 'nowhere')])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and 'no such results folder' in err


def test_lr_find_writes_its_suggestions_and_trains_nothing(tiny_cli, tmp_path):
    out = tmp_path / 'out'
    stage2_baseline.main(tiny_cli('--lr-find'))
    (folder,) = (out / 'stage2_baseline').iterdir()
    found = json.loads((folder / 'lr_find.json').read_text())
    assert set(found['suggested']) == {'minimum', 'steep', 'valley', 'slide'}
    assert all(0 < v < 10 for v in found['suggested'].values()) and found['recipe']['model']['channels'] == [4, 8, 8, 16]
    assert (folder / 'lr_find.png').stat().st_size > 1000
    assert read_json(folder / 'stage.json')['status'] == 'lr_find'
    assert not [p for p in folder.iterdir() if p.is_dir()] and not list(folder.rglob('*.pth'))  # nothing trained
    assert not (folder / 'summary.json').exists() and latest_stage_summary(out, 'stage2_baseline') is None
    text, _ = report(out)
    assert 'Not run yet' in section(text, 'Stage 2: baseline ResNet') and '(lr_find)' in section(text, 'Stage 2: baseline ResNet')


def test_epoch_axes_have_whole_epoch_ticks(tmp_path):
    import matplotlib.pyplot as plt
    import pandas as pd
    from fastai_lab.tables import epoch_axis
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0.2, 0.4]); epoch_axis(ax); fig.canvas.draw()  # two epochs: matplotlib alone ticks 0.2, 0.4...
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    plt.close(fig)
