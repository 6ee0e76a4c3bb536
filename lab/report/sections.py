"""The report's sections, one function per kind of stage (Task 1, Task 2, Task 3), and their assembly into the report
(`build_report`): a list of blocks, each Markdown text or a row of `Figure`s (the pieces: `blocks`)."""
from datetime import datetime
from pathlib import Path

from ..io import read_json
from ..metrics import is_undefined
from ..cost import COST_HEADER, cost_cells, cost_note
from ..rows import Row, SegRow
from ..stats import TIE_RULE, wilson
from ..tables import EPOCHS_FROM_0, markdown_rows
from .describe import (_data_info, _design, _recipe, _training, describe_backbone, describe_data, describe_resnet,
                       describe_unet)
from .find import collect, provenance_warnings
from .blocks import _embed, _epoch, _fig, _figs, _header, _not_run, _num, _pct, _provenance, _rel_out

EXPERIMENTS_TITLE = 'All Task 2 experiments (T2.13)'


def _task1(out, f):
    c, s = f.config or {}, f.summary
    if f.spec.kind == 'variance':
        design = (f"Design: a 5-layer probe net (`arch.probes.VarianceProbeNet`: five stride-2 3x3 convs and a global "
                  f"average pool, output (1, 512, 1, 1) per image) whose layer-3 weight variance is "
                  f"{c.get('ratio', 2):g}x "
                  f"that of layers 2 and 4, against an equal-variance control; {c.get('size', '?')} px inputs, "
                  f"weight seeds {c.get('seeds')}; inputs: random N(0,1)"
                  + (f" and {s.get('images')}" if s.get('images') else '') + '.')
        figs = _figs(_fig(f.folder, 'gap_histogram.png', 'GAP activation histograms, x2 net vs control'),
                     _fig(f.folder, 'layer_std.png', 'activation std per layer'))
        tables = [_embed(f.folder / 'table.md'), _embed(f.folder / 'weight_variances.md')]
        verdict = ("Largest relative error of the measured variance ratios: "
                   f"{s.get('max_ratio_error', float('nan')):.2g}.")
    else:
        design = (f"Design: `arch.probes.DeepConvReLU`, {c.get('depth', '?')} x (Conv2d 3x3 -> ReLU), output "
                  f"(batch, 64, 8, 8); one backward per seed on a batch of {c.get('batch', '?')}; "
                  f"seeds {c.get('seeds')}; "
                  f"norm: {s.get('norm', 'L2 norm of the weight gradient')}.")
        figs = _figs(_fig(f.folder, 'grad_per_layer.png', 'weight-gradient norm per layer (one backward)'),
                     _fig(f.folder, 'signal_per_layer.png', 'forward and backward signal per layer'),
                     _fig(f.folder, 'init_and_depth.png', 'first/last gradient ratio vs initialisation and depth'))
        tables = [_embed(f.folder / 'table.md')]
        verdict = ("Check T1.3 (first layer's gradient smaller than the last's, every seed): "
                   f"**{'PASS' if s.get('passed') else 'FAIL'}**.")
    explanation = _embed(f.folder / 'explanation.md', drop_title=False, level=4)
    return [design, figs, verdict, '**Explanation (computed from the measured numbers):**', explanation,
            *[t for t in tables if t]]


def _variants(f):
    "name -> (Recipe, run config) of the stage's variants, from their first seed's run folder."
    seeds = f.seeds or [0]
    out = {}
    for row in map(Row.of, f.summary.get('rows', [])):
        run = f.folder / f"{row.name}-seed{seeds[0]}"
        if (run / 'config.json').is_file():
            config = read_json(run / 'config.json')
            out[row.name] = (_recipe(config.get('recipe')), config)
    return out


def _resnet_rows(f, stats=False):
    header = ['variant', 'configuration', 'params (M)', 'valid acc (best epoch)', '95% over seeds', 'train acc',
              'best epoch', 'final train-valid gap', 's / run', *COST_HEADER]
    if stats: header += ['share <= 0', 'last-layer act std', 'grad first/last']
    rows = []
    for r in map(Row.of, f.summary.get('rows', [])):
        ci = r.valid_acc_ci
        row = [r.name, r.config or '', _num(r.params_M), _pct(r.valid_acc),
               f"+-{ci:.1%}" if ci is not None else 'one seed', _pct(r.train_acc),
               _epoch(r.best_epoch),
               _pct(r.final_gap), _num(r.seconds, 1), *cost_cells(r)]
        if stats:
            row += [_num(r.dead_share), _num(r.act_std_last), _num(r.grad_first_over_last, 3)]
        rows.append(row)
    return (markdown_rows(header, rows)
            + f'\n\nValid accuracy at the best epoch by valid accuracy; {EPOCHS_FROM_0} (0 is the first). '
            + cost_note(f.summary.get('rows', [])))


def _design_variants(f):
    lines = []
    variants = _variants(f)
    for name, (recipe, config) in variants.items():
        if recipe is None: lines.append(f"- {name}: {config.get('model', '?')} (recipe not readable)"); continue
        lines.append(f"- **{name}**: {describe_resnet(recipe)}")
    base = _recipe(f.summary.get('recipe')) or next((r for r, _ in variants.values() if r), None)
    return lines, base


def _resnet(out, f):
    stats = f.spec.stage == 'stage3_3_activations'
    lines, base = _design_variants(f)
    items = ['**Design** (read from each variant\'s recipe in its run\'s config.json):', '\n'.join(lines)]
    if f.summary.get('chosen_from'): items.append(f"Configuration taken from: {f.summary['chosen_from']}")
    if base:
        items += [_training(f, base), describe_data(f, base)]
    items += [_resnet_rows(f, stats)]
    if f.spec.stage == 'stage2_baseline':
        figs = _figs(_fig(f.run, 'accuracy.png', 'accuracy: train and valid per epoch'),
                     _fig(f.run, 'loss.png', 'loss: train and valid per epoch'))
        if f.run and (f.run / 'model.txt').is_file():
            items.append(f"`print(model)` and the parameter count: `{_rel_out(out, f.run / 'model.txt')}`.")
    else:
        figs = _figs(_fig(f.folder, 'valid_accuracy.png', 'valid accuracy per epoch, all variants'),
                     _fig(f.folder, 'train_accuracy.png', 'train accuracy per epoch'),
                     _fig(f.folder, 'valid_loss.png', 'valid loss per epoch'),
                     _fig(f.folder, 'train_loss.png', 'train loss per epoch'))
        if stats:
            figs += _figs(_fig(f.folder, 'statistics_per_layer.png', 'activation and gradient statistics per layer'),
                          _fig(f.folder, 'gradients_over_training.png', 'weight-gradient norms over training'))
    items += [figs, '**Conclusion (computed by the stage from its numbers):**',
              f.summary.get('analysis') or f.summary.get('conclusion', '')]
    return items


def _final(out, f):
    s = f.summary
    final = _recipe(s.get('final_recipe') or s.get('best_recipe'))
    items = []
    if final: items += _design(f, final, 'the final recipe of summary.json', describe_resnet(final))
    if s.get('chosen_from'): items.append(f"Configuration taken from: {s['chosen_from']}")
    items += [_embed(f.folder / 'ablation.md') or '*No ablation table (ablation.md) in this run.*',
              _figs(_fig(f.folder, 'ablation_valid.png', 'valid accuracy per row, 95% interval; green: kept, grey: not '
                                                          'kept'))]
    run = f.run
    items.append(_embed(run / 'per_class.md') if run else None)
    tta = ' (with TTA, as the headline)' if final and final.tta else ''
    items += [_figs(_fig(run, 'confusion_matrix.png', f'confusion matrix on the test set{tta}'),
                    _fig(run, 'test_samples.png', f'10 random test images, true and predicted class{tta}'),
                    _fig(run, 'show_results.png', '`learn.show_results` on the test set (one plain pass)'),
                    _fig(run, 'accuracy.png', 'accuracy per epoch'), _fig(run, 'loss.png', 'loss per epoch')),
              '**Conclusion (computed):** ' + s.get('conclusion', '')]
    return [i for i in items if i]


def _classifier(out, f):
    s = f.summary
    recipe = _recipe(s.get('best_recipe') or s.get('recipe'))
    items = []
    if recipe:
        items += _design(f, recipe, 'its recipe', describe_resnet(recipe))
        items[-1] += (" The 64 px Tiny ImageNet originals are brought to this size by the squish resize (upsampled, "
                      "nothing cropped).")
    rows = []
    for r in map(Row.of, s.get('rows', [])):
        vlo, vhi = wilson(r.valid_acc, r.n_eval or 0)
        tlo, thi = wilson(r.test_acc, r.n_test or 0) if r.has('test_acc') else (None, None)
        rows.append([r.name, r.config or '', _num(r.params_M), _pct(r.valid_acc),
                     f"{_pct(vlo)}-{_pct(vhi)} (n={r.n_eval})", _pct(r.test_acc),
                     f"{_pct(tlo)}-{_pct(thi)} (n={r.n_test})" if tlo is not None else '-',
                     _epoch(r.best_epoch), r.n_seeds, *cost_cells(r)])
    items.append(markdown_rows(['model', 'configuration', 'params (M)', 'valid acc', 'Wilson 95%', 'test acc',
                                'Wilson 95%', 'best epoch', 'seeds', *COST_HEADER], rows)
                 + f"\n\nBest epoch: {EPOCHS_FROM_0}. {cost_note(s.get('rows', []))}")
    items.append(_embed(f.run / 'per_class.md') if f.run else None)
    items += [_figs(_fig(f.run, 'accuracy.png', 'accuracy per epoch'), _fig(f.run, 'loss.png', 'loss per epoch'),
                    _fig(f.run, 'confusion_matrix.png', 'confusion matrix on the test set'),
                    _fig(f.run, 'test_samples.png', '10 random test images')),
              '**Conclusion (computed):** ' + s.get('conclusion', '')]
    if s.get('checkpoint'):
        items.append(f"Checkpoint kept for Task 3.3: `{_rel_out(out, f.folder / s['checkpoint'])}`.")
    return [i for i in items if i]


def _score(r, key):
    "An IoU or Dice cell: empty when it was measured but is undefined (no rock pixels), '-' when not measured."
    return '' if r.has(key) and is_undefined(getattr(r, key)) else _num(getattr(r, key))


def _seg_table(rows):
    header = ['model', 'params (M)', 'trainable (M)', 'valid IoU', 'valid Dice', 'valid pixel acc', 'test IoU',
              'test Dice', 'real-frame IoU', 'real-frame Dice', 'epochs', 'seeds', *COST_HEADER[:1], *COST_HEADER[2:]]
    body = [[r.name, _num(r.params_M), _num(r.trainable_M), _score(r, 'iou'), _score(r, 'dice'),
             _num(r.pixel_acc), _score(r, 'test_iou'), _score(r, 'test_dice'), _score(r, 'real_iou'),
             _score(r, 'real_dice'), r.epochs, r.n_seeds, *(c for i, c in enumerate(cost_cells(r)) if i != 1)]
            for r in map(SegRow.of, rows)]
    empty = any(c == '' for row in body for c in row)
    return markdown_rows(header, body) + ('\n\nValid at the best epoch by valid IoU; threshold 0.5, counts summed '
                                          'over all pixels; real frame = the real Kaggle render of a known place '
                                          f'(sim-to-real). {cost_note(rows)}' + (' An empty IoU or Dice cell: no rock pixels in that '
                                                              "split's masks, so the score is undefined." if empty
                                                              else ''))


def _real_note(run):
    if not run or not (run / 'summary.json').is_file(): return None
    r = read_json(run / 'summary.json')
    return (f"Real frame(s) scored: {r['real_frames']} from `{r['real_data']}`." if r.get('real_data') else
            "No real frame was available to score (sim-to-real check not done).")


def _unet(out, f):
    s = f.summary
    recipe = _recipe(s.get('best_recipe') or s.get('recipe'))
    items = []
    if recipe: items += _design(f, recipe, 'its recipe', describe_unet(recipe))
    items += [_seg_table(s.get('rows', [])), _real_note(f.run),
              _figs(_fig(f.run, 'prediction_0.png', 'valid frame: input, predicted mask, true mask'),
                    _fig(f.run, 'prediction_1.png', 'another valid frame'),
                    _fig(f.run, 'test_prediction_0.png', 'held-out test frame' if _data_info(f).get('held_out', True)
                         else 'test frame (the training frame itself: not held out)'),
                    _fig(f.run, 'real_prediction_0.png', 'the real Kaggle frame (sim-to-real)'),
                    _fig(f.run, 'iou.png', 'IoU per epoch'), _fig(f.run, 'loss.png', 'loss per epoch')),
              '**Conclusion (computed):** ' + s.get('conclusion', '')]
    return [i for i in items if i]


def _backbone(out, f):
    s = f.summary
    seeds = f.seeds or [0]
    a_run, b_run = f.folder / f'A-seed{seeds[0]}', f.folder / f'B-seed{seeds[0]}'
    a = (_recipe(read_json(a_run / 'config.json')['recipe']) if (a_run / 'config.json').is_file()
         else _recipe(s.get('recipe')))
    b = _recipe(read_json(b_run / 'config.json')['recipe']) if (b_run / 'config.json').is_file() else None
    items = []
    if a:
        checkpoint = _rel_out(out, s['checkpoint']) if s.get('checkpoint') else None
        items += [f"**Design** (variant A's recipe): {describe_backbone(a, checkpoint)}",
                  _training(f, a, label='Variant A, training')]
        if b: items.append(_training(f, b, label="Variant B (A's best checkpoint, unfrozen, discriminative "
                                                 "learning rates), training"))
        items.append(describe_data(f, a))
    base = s.get('baseline')
    if base and base != 'trained here' and Path(base, 'summary.json').is_file():
        br = _recipe(read_json(Path(base, 'summary.json')).get('best_recipe'))
        items.append(f"Baseline row: the T3.2 run `{_rel_out(out, base)}`" +
                     (f" ({describe_unet(br).rstrip('.')})" if br else '') + '.')
    elif base: items.append(f"Baseline row: {base}.")
    items += [_seg_table(s.get('rows', [])), _real_note(b_run if b_run.is_dir() else a_run),
              _figs(_fig(a_run, 'prediction_0.png', 'A (frozen encoder): valid frame'),
                    _fig(b_run, 'prediction_0.png', 'B (fine-tuned): valid frame'),
                    _fig(b_run, 'test_prediction_0.png', 'B: held-out test frame' if _data_info(f).get('held_out', True)
                         else 'B: test frame (the training frame itself: not held out)'),
                    _fig(b_run, 'real_prediction_0.png', 'B: the real Kaggle frame'),
                    _fig(a_run, 'iou.png', 'A: IoU per epoch'), _fig(b_run, 'iou.png', 'B: IoU per epoch')),
              _figs(_fig(f.folder, 'iou_vs_macs.png', 'U-Nets: valid IoU against GMACs per image, with the Pareto '
                                                      'front')),
              '**Conclusion (computed):** ' + s.get('conclusion', '')]
    return [i for i in items if i]


RENDER = {'variance': _task1, 'gradients': _task1, 'resnet': _resnet, 'final': _final, 'classifier': _classifier,
          'unet': _unet, 'backbone': _backbone}


def build_report(out, experiments_folder=None):
    """The report as a list of blocks (Markdown text, or a list of `Figure`s drawn as one row), and the sections'
    `Found`. `experiments_folder`: where `lab.rows.experiments_table` writes experiments.md/csv (None: the T2.13
    table is not made)."""
    out = Path(out)
    found = collect(out)
    general, per = provenance_warnings(found)
    ran = sum(f.ran for f in found)
    blocks = ['# Lab report',
              f"Generated {datetime.now():%Y-%m-%d %H:%M} from the newest finished run of every stage under "
              f"`{out.resolve()}` ({ran} of {len(found)} sections run). Every table, number and conclusion below is "
              f"read from those runs' summary.json, config.json and tables; the design is read from their recipes.",
              *_provenance(out, found, general), f"**How every comparison chooses** (stages 3.1-3.3, T3.3): {TIE_RULE}"]
    chapter = None
    for f in found:
        if f.spec.chapter != chapter:
            chapter = f.spec.chapter
            blocks.append(f"## {chapter}")
        blocks.append(f"### {f.spec.title}")
        if not f.ran: blocks += _not_run(out, f)
        else:
            blocks += _header(out, f, per)
            try: blocks += RENDER[f.spec.kind](out, f)
            except Exception as e:  # one unreadable section must not cost the whole report
                blocks.append(f"> **Warning:** this section could not be rendered ({type(e).__name__}: {e}).")
        if f.spec.stage == 'stage4_final': blocks += _experiments(out, experiments_folder)
    return blocks, found


def _experiments(out, folder):
    blocks = [f"### {EXPERIMENTS_TITLE}"]
    if folder is None: return blocks + ['*Not made here.*']
    from ..rows import experiments_table
    try: experiments_table(out, folder)
    except FileNotFoundError as e: return blocks + [f"**Not run yet**: {e}."]
    blocks += ["The newest finished run of every Task 2 stage (`lab.rows.experiments_table`; also in "
               "experiments.md/csv beside this report).", _embed(Path(folder) / 'experiments.md'),
               _figs(_fig(folder, 'accuracy_vs_macs.png', 'T2 variants: valid accuracy (95% interval) against GMACs '
                                                          'per image, with the Pareto front'))]
    return [b for b in blocks if b]
