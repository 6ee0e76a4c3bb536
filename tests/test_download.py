"""scripts/download.py end to end: Tiny ImageNet from a local http.server (a small zip in the real layout, made
here), the moon data through a mocked kagglehub; checksums, layout checks, one-line failures, nothing left half-done."""
import functools, hashlib, http.server, shutil, socket, sys, threading, types, zipfile
from pathlib import Path

import pytest

from fastai_lab.data import download as dl
from fastai_lab.data.locate import find_moon, find_tiny_imagenet
from fastai_lab.data.synthetic import make_moon_like, make_tiny_imagenet_like


def _zip(folder, path):
    "Zip `folder` (under its own name, as cs231n's archive holds tiny-imagenet-200/) without the generator's marks."
    with zipfile.ZipFile(path, 'w') as z:
        for f in sorted(folder.rglob('*')):
            if f.name not in ('SYNTHETIC', '.complete'): z.write(f, f.relative_to(folder.parent))
    return path


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "(base url, served folder, spec of the good archive): a real-layout zip, a corrupt copy and a wrong layout."
    root = tmp_path_factory.mktemp('www')
    tiny = make_tiny_imagenet_like(root / 'src' / 'tiny-imagenet-200', n_classes=2, n_train=2, n_val=1, size=8)
    good = _zip(tiny, root / 'tiny-imagenet-200.zip')
    (root / 'corrupt').mkdir(); data = good.read_bytes()
    (root / 'corrupt' / 'tiny-imagenet-200.zip').write_bytes(data[:len(data) // 2])
    shutil.rmtree(tiny / 'val')
    _zip(tiny, (root / 'wrong').mkdir() or root / 'wrong' / 'tiny-imagenet-200.zip')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f'http://127.0.0.1:{server.server_address[1]}'
    spec = dict(dl.TINY_IMAGENET, url=f'{base}/tiny-imagenet-200.zip', size=len(data),
                md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest())
    yield base, spec
    server.shutdown()


def _left(dest): return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def test_tiny_imagenet_downloads_checks_and_extracts(served, tmp_path, capsys):
    base, spec = served
    target = dl.download_tiny_imagenet(tmp_path / 'data', tmp_path / 'archive', spec)
    assert target == tmp_path / 'data' / 'tiny-imagenet-200' and _left(tmp_path / 'data') == ['tiny-imagenet-200']
    assert find_tiny_imagenet(target, quiet=True) == (target, 'real')  # the loaders' own check
    assert len(list((target / 'train').glob('*/images/*'))) == 4 and (target / 'val' / 'val_annotations.txt').is_file()
    assert dl.file_hashes(tmp_path / 'archive' / 'tiny-imagenet-200.zip')[2] == spec['sha256']  # kept, as untar_data
    # a second call finds it in place: no download (the url is dead now)
    assert dl.download_tiny_imagenet(tmp_path / 'data', tmp_path / 'archive', dict(spec, url=base + '/gone.zip')) == target


def test_unrecorded_sha256_is_printed(served, tmp_path, capsys):
    _, spec = served
    dl.download_tiny_imagenet(tmp_path / 'data', tmp_path / 'archive', dict(spec, sha256=None))
    assert f"sha256 {spec['sha256']} (no recorded sha256" in capsys.readouterr().out


@pytest.mark.parametrize('kind', ['checksum', 'no_checksum', 'layout'])
def test_a_bad_archive_is_refused_and_nothing_is_left(served, tmp_path, kind):
    base, spec = served
    bad = {'checksum': dict(spec, url=f'{base}/corrupt/tiny-imagenet-200.zip'),
           'no_checksum': dict(spec, url=f'{base}/corrupt/tiny-imagenet-200.zip', size=None, md5=None, sha256=None),
           'layout': dict(spec, url=f'{base}/wrong/tiny-imagenet-200.zip', size=None, md5=None, sha256=None)}[kind]
    why = {'checksum': r'size \d+ is not the recorded \d+ \(a corrupt or changed archive\); it was removed',
           'no_checksum': r'not a Tiny ImageNet archive \(File is not a zip file\); nothing was extracted',
           'layout': r'not a Tiny ImageNet archive \(.*val.*not found'}[kind]
    with pytest.raises(dl.DownloadError, match=why + '.*download .* by hand and unzip it so that '):
        dl.download_tiny_imagenet(tmp_path / 'data', tmp_path / 'archive', bad)
    assert _left(tmp_path / 'data') == []  # no target, no temporary folder
    if kind == 'checksum': assert _left(tmp_path / 'archive') == []  # the corrupt archive is not kept


def test_offline_is_one_line_naming_where_to_put_the_files(tmp_path, capsys, monkeypatch):
    import fastai.data.external
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]  # nothing listens there once closed
    from scripts import download
    spec = dict(dl.TINY_IMAGENET, url=f'http://127.0.0.1:{port}/tiny-imagenet-200.zip')
    monkeypatch.setattr(dl, 'TINY_IMAGENET', spec)
    monkeypatch.setattr(fastai.data.external, 'fastai_path', lambda key: tmp_path / key)  # not ~/.fastai/archive
    with pytest.raises(SystemExit) as e: download.main(['tiny-imagenet', '--dest', str(tmp_path / 'data')])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert f"could not download {spec['url']}" in err and str(tmp_path / 'data' / 'tiny-imagenet-200') in err
    assert _left(tmp_path / 'data') == []


def _fake_kagglehub(monkeypatch, make=None, fail=None):
    calls = []
    def dataset_download(handle, path=None, *, force_download=False, output_dir=None):
        calls.append((handle, output_dir))
        if fail: raise fail
        return str(make(Path(output_dir)))
    monkeypatch.setitem(sys.modules, 'kagglehub', types.SimpleNamespace(dataset_download=dataset_download))
    return calls


def test_moon_through_kagglehub_is_laid_out_and_checked(monkeypatch, tmp_path):
    def kaggle_like(out):  # what the Kaggle set holds: images/{render,ground,clean}, real_moon_images/
        make_moon_like(out, n=3, width=48, height=32)
        (out / 'images' / 'clean').mkdir(); (out / 'real_moon_images').mkdir()
        (out / 'SYNTHETIC').unlink()
        return out
    calls = _fake_kagglehub(monkeypatch, kaggle_like)
    target = dl.download_moon(tmp_path / 'data')
    assert calls == [(dl.MOON_HANDLE, str(calls[0][1]))] and target == tmp_path / 'data' / 'moon'
    assert find_moon(target, quiet=True) == (target, 'real') and _left(tmp_path / 'data') == ['moon']
    assert dl.download_moon(tmp_path / 'data') == target and len(calls) == 1  # in place: kept, not fetched again


@pytest.mark.parametrize('case', ['no_credentials', 'wrong_layout', 'no_kagglehub'])
def test_moon_failures_are_one_line_and_leave_nothing(monkeypatch, tmp_path, case):
    if case == 'no_credentials': _fake_kagglehub(monkeypatch, fail=RuntimeError('401 Client Error: Unauthorized'))
    elif case == 'wrong_layout': _fake_kagglehub(monkeypatch, lambda out: (out / 'render').mkdir(parents=True) or out)
    else: monkeypatch.setitem(sys.modules, 'kagglehub', None)  # import kagglehub -> ImportError
    why = {'no_credentials': r'could not download .* \(RuntimeError: 401 Client Error: Unauthorized\)',
           'wrong_layout': r'not the moon layout', 'no_kagglehub': r'needs kagglehub \(pip install kagglehub\)'}[case]
    target = tmp_path / 'data' / 'moon'
    with pytest.raises(dl.DownloadError, match=why + f'.*{target}/images/render/ and {target}/images/ground/'):
        dl.download_moon(tmp_path / 'data')
    assert _left(tmp_path / 'data') == []
