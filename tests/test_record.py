"""The result record (lab/record.py) and the table layouts (lab/rows.py): round trips, old folders, column order."""
import json, pickle
from pathlib import Path

import pytest

from fastai_lab.record import Evaluation, RunRecord
from fastai_lab.rows import ExperimentRow, Row, SegRow, classifier_row, overfitting_text, seg_row
from fastai_lab.recipe import SPEC

BASE = Path('/work/base_results')  # a quick run_all of the code before the record: its folders must still read

OLD_SUMMARY = {  # a classifier run's summary.json as the code before the record wrote it (keys in its order)
    'best_epoch': 1, 'best': {'epoch': 1.0, 'train_loss': 1.0, 'train_accuracy': 0.5, 'valid_loss': 0.9,
                              'valid_accuracy': 0.6},
    'final': {'epoch': 2.0, 'train_loss': 0.8, 'train_accuracy': 0.7, 'valid_loss': 1.1, 'valid_accuracy': 0.55},
    'min_valid_loss': 0.9, 'monitor': 'valid_accuracy', 'params': 1234, 'trainable_params': 1234, 'epochs': 3,
    'seed': 0, 'wall_seconds': 1.5, 'epoch_seconds': 0.5, 'run': 'spec-seed0', 'checkpoint': 'model.pth',
    'recipe': {'seed': 0}, 'n_train': 24, 'n_valid': 6, 'n_test': 6, 'data_path': '/data', 'bs': 8, 'caveats': [],
    'test_acc': 0.5, 'test_acc_lo': 0.19, 'test_acc_hi': 0.81, 'macro_f1': 0.4, 'n': 6, 'test_report_preds': 'plain'}


def test_record_round_trips_through_summary_json_with_its_keys_in_order(tmp_path):
    rec = RunRecord.from_dict(OLD_SUMMARY)
    assert rec.best_epoch == 1 and rec.n_valid == 6 and rec.best['valid_accuracy'] == 0.6 and rec.test_acc == 0.5
    assert rec.valid_acc_tta is None and not rec.has('valid_acc_tta')  # absent: reads None, stays out of the file
    rec.write(tmp_path)
    text = json.loads((tmp_path / 'summary.json').read_text())
    assert list(text) == list(OLD_SUMMARY) and text == OLD_SUMMARY
    again = RunRecord.read(tmp_path)
    assert again == rec and again.to_dict() == OLD_SUMMARY
    assert again != rec.replace(test_acc=0.6) and rec.test_acc == 0.5  # replace copies


def test_record_keeps_unknown_keys_and_refuses_unknown_fields(tmp_path):
    rec = RunRecord.from_dict(dict(OLD_SUMMARY, later_field=3))
    assert rec.extra == {'later_field': 3} and rec.to_dict()['later_field'] == 3  # written back, never dropped
    with pytest.raises(TypeError, match='no field valid_accuracy'): rec.update(valid_accuracy=0.5)  # a renamed field
    assert rec.drop('n') == 6 and 'n' not in rec.to_dict() and rec.n is None


def test_fields_set_later_are_written_after_the_others_in_that_order():
    rec = RunRecord(best_epoch=0, run='a')
    rec.update(cost={'seconds': 1.0}, caveats=['c'])
    rec.seed = 3
    assert list(rec.to_dict()) == ['best_epoch', 'run', 'cost', 'caveats', 'seed']
    shipped = pickle.loads(pickle.dumps(rec))  # --jobs workers send their records back to the stage
    assert shipped == rec and list(shipped.to_dict()) == list(rec.to_dict()) and dict(rec) == rec.to_dict()
    assert Evaluation(valid_acc=0.5).update(test_acc=0.4).to_dict() == {'valid_acc': 0.5, 'test_acc': 0.4}


@pytest.mark.skipif(not BASE.is_dir(), reason='no results of the earlier code here')
def test_every_old_run_folder_reads_and_writes_back_the_same_json(tmp_path):
    runs = [p.parent for p in BASE.glob('**/*-seed*/summary.json')]
    assert runs
    for run in runs:
        old = json.loads((run / 'summary.json').read_text())
        rec = RunRecord.read(run)
        assert rec.extra == {} and rec.to_dict() == old and list(rec.to_dict()) == list(old), run
        assert rec.run == old['run'] and rec.best_epoch == old['best_epoch']


def _run(best_valid, best_train, final_valid, final_train, min_loss=1.0, final_loss=1.2, **more):
    return RunRecord(best={'valid_accuracy': best_valid, 'train_accuracy': best_train},
                     final={'valid_accuracy': final_valid, 'train_accuracy': final_train, 'valid_loss': final_loss},
                     min_valid_loss=min_loss, params=2_000_000, best_epoch=2, wall_seconds=3.0, n_valid=6, **more)


def test_classifier_row_keeps_the_table_columns_and_reads_dicts_too():
    test = dict(test_acc=0.5, test_acc_lo=0.2, test_acc_hi=0.8, n=6)
    records = [_run(.6, .7, .55, .9, **test), _run(.7, .8, .65, .95, **test)]
    row = classifier_row('A', SPEC, records)
    header = ('name,config,params_M,valid_acc,valid_acc_std,valid_acc_ci,n_eval,train_acc,final_valid_acc,final_gap,'
              'valid_loss_rise,best_epoch,n_seeds,seconds,test_acc,test_acc_std,test_acc_ci,test_lo,test_hi,n_test')
    assert ','.join(row.to_dict()) == header  # task3_classifier128's table.csv of the earlier code
    assert row.valid_acc == pytest.approx(.65) and row.final_gap == pytest.approx(.325) and row.n_eval == 6
    assert classifier_row('A', SPEC, [r.to_dict() for r in records]) == row  # summaries read as dicts: the same row
    assert Row.of(json.loads(json.dumps(row.to_dict()))) == row  # a stage summary.json's 'rows' read back
    assert 'train accuracy 32.5% above valid' in overfitting_text([row])


def test_seg_row_columns_and_experiment_row():
    runs = [RunRecord(best={'valid_iou': .5, 'valid_dice': .6, 'valid_pixel_acc': .9}, params=10_000,
                      trainable_params=5_000, wall_seconds=2.0, test_iou=.4, test_dice=.5, test_pixel_acc=.8)]
    row = seg_row('u', runs, 3)
    assert list(row.to_dict()) == ['name', 'iou', 'iou_std', 'iou_ci', 'dice', 'dice_std', 'dice_ci', 'pixel_acc',
                                   'pixel_acc_std', 'pixel_acc_ci', 'test_iou', 'test_iou_std', 'test_dice',
                                   'test_dice_std', 'test_pixel_acc', 'test_pixel_acc_std', 'params_M', 'trainable_M',
                                   'epochs', 'seconds', 'n_seeds']
    assert row.iou == .5 and row.test_dice == .5 and row.real_iou is None and SegRow.of(row.to_dict()) == row
    assert ExperimentRow(stage='3.1', valid_acc=.5).to_dict() == {'stage': '3.1', 'valid_acc': .5}


@pytest.mark.skipif(not BASE.is_dir(), reason='no results of the earlier code here')
def test_rows_of_old_stage_summaries_read_back_in_their_order():
    stages = list(BASE.glob('stage*/*/summary.json')) + list(BASE.glob('task3_*/*/summary.json'))
    assert stages
    for p in stages:
        for r in json.loads(p.read_text())['rows']:
            layout = SegRow if 'iou' in r else Row
            assert layout.of(r).to_dict() == r and list(layout.of(r).to_dict()) == list(r) and not layout.of(r).extra, p
