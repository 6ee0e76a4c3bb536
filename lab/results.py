"""The results contract (D7): where every invocation writes, how a stage is marked finished, and how it resumes.

A training stage writes ``<out>/<stage>/<timestamp>/``: ``stage.json`` (status, the invocation's key: recipe and
seeds, command, pid), one folder per training run (``<variant>-seed<k>/``, finished when its ``summary.json``
exists) and, last of all, the stage's ``summary.json``: a stage folder without it is unfinished and is never read
as a result. Whatever stops a stage (Ctrl-C, SIGTERM, an exception, SIGKILL) its finished runs stay, and the same
command with ``--resume`` continues the newest unfinished invocation: finished runs are skipped, an interrupted run
continues from its last finished epoch. A stage that stops before anything was trained leaves nothing behind.

Outputs that are not training stages (Task 1 probes, report, benchmark) are written by `stage_dir`: a hidden
``.<timestamp>.partial`` folder renamed when done, removed on failure. No run ever overwrites another.
"""
import os, shutil, socket, sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from .distributed import broadcast_path, dist_rank, is_rank0
from .figures import drawing_beside
from .io import error_line, json_safe, read_json, same_json, write_json

__all__ = ['Stage', 'StageMismatch', 'stage_dir', 'run_name', 'variant_of']


def run_name(variant, seed):
    "The folder name of one training run: `<variant>-seed<k>`."
    return f'{variant}-seed{seed}'


def variant_of(name):
    "The variant of a run folder name (`run_name`'s inverse)."
    return name.rsplit('-seed', 1)[0]


def _stamp(root):
    stamp = datetime.now().strftime('%Y%m%d-%H%M%S')
    name, k = stamp, 1
    while (root / name).exists() or (root / f'.{name}.partial').exists():
        k += 1; name = f'{stamp}-{k}'
    return name


@contextmanager
def stage_dir(out, stage):
    """Yield a fresh folder for one invocation of a non-training `stage`; publish it on success, remove it on failure
    (with the folders above it that this call made, e.g. a run's evaluation/, when nothing else is in them)."""
    root = Path(out) / stage
    made = [p for p in (root, *root.parents) if not p.exists()]  # innermost first
    root.mkdir(parents=True, exist_ok=True)
    name = _stamp(root)
    partial = root / f'.{name}.partial'
    partial.mkdir()
    try:
        with drawing_beside(): yield partial  # every figure drawn inside is on disk before the folder is published
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        for p in made:
            try: p.rmdir()
            except OSError: break  # not empty (another invocation wrote there meanwhile): kept
        raise
    final = root / name
    os.replace(partial, final)
    print(f"results: {final}")


def _pid_alive(pid, host):
    if host != socket.gethostname() or pid in (None, os.getpid()): return False
    try: os.kill(pid, 0); return True
    except (ProcessLookupError, PermissionError, OSError): return False


class StageMismatch(ValueError):
    "--resume found an unfinished invocation started with another recipe or seeds."


class Stage:
    """One invocation of a training stage, as a context manager: ``with Stage(opts, 'stage3_1_channels', key) as st``.

    `key`: what makes two invocations the same (the resolved recipe and the seeds); `--resume` continues only an
    unfinished invocation with an equal key. Inside, `st.folder` is the invocation's folder, `st.run_dir(name)` a run's,
    and `st.finish(summary)` writes the stage's summary.json: the mark that the stage finished. With --resume and a
    finished invocation of the same key, `st.done` holds its summary and nothing needs to run.
    Under torchrun only rank 0 writes; the other ranks get the folder's path from it.
    """
    def __init__(self, opts, name, key):
        self.opts, self.name, self.key = opts, name, json_safe(key)
        self.root = Path(opts.out) / name
        self.folder, self.runs_folder, self.done, self.resumed, self.made = None, None, None, False, []

    # -- opening -------------------------------------------------------------------------------------------------
    def _find_resumable(self):
        if not self.root.exists(): return None
        folders = sorted((p for p in self.root.iterdir() if (p / 'stage.json').is_file()), key=lambda p: p.name)
        for p in reversed(folders):
            state = read_json(p / 'stage.json')
            if state.get('status') == 'lr_find': continue
            finished = (p / 'summary.json').is_file()
            if not same_json(state.get('key'), self.key):
                if finished: continue  # an older, finished invocation of other settings: not ours to resume
                raise StageMismatch(f"--resume: the newest unfinished {self.name} run ({p}) was started with another "
                                    f"recipe or seeds; rerun its own command ({state.get('command')}) or drop --resume")
            if finished: return p, True
            if _pid_alive(state.get('pid'), state.get('host')):
                raise RuntimeError(f"--resume: {p} is still being written by process {state['pid']}; wait for it or stop it")
            return p, False
        return None

    def __enter__(self):
        if is_rank0():
            found = self._find_resumable() if self.opts.resume else None
            if found and found[1]:
                self.folder, self.done = found[0], read_json(found[0] / 'summary.json')
                print(f"{self.name}: already finished in {self.folder}; nothing to resume")
            elif found:
                self.folder, self.resumed = found[0], True
                kept = [p.name for p in self.folder.iterdir() if (p / 'summary.json').is_file()]
                print(f"{self.name}: resuming {self.folder} ({len(kept)} finished run(s) kept: {', '.join(kept) or '-'})")
            else:
                if self.opts.resume: print(f"{self.name}: nothing unfinished to resume under {self.root}; starting anew")
                self.made = [p for p in (self.root, *self.root.parents) if not p.exists()]  # innermost first
                self.root.mkdir(parents=True, exist_ok=True)
                self.folder = self.root / _stamp(self.root)
                self.folder.mkdir()
            if not self.done: self._write_state('running')
        self.runs_folder = self.folder = broadcast_path(self.folder)
        if not is_rank0():  # the runs are rank 0's (checkpoints are read from there); what else is written goes away
            import tempfile
            self.folder = Path(tempfile.mkdtemp(prefix=f'{self.name}-rank{dist_rank()}-'))
        return self

    def _write_state(self, status, **extra):
        if not is_rank0(): return
        state = dict(stage=self.name, status=status, key=self.key, pid=os.getpid(), host=socket.gethostname(),
                     command=' '.join([Path(sys.argv[0]).name] + sys.argv[1:]),
                     updated=datetime.now().isoformat(timespec='seconds'), **extra)
        write_json(self.folder / 'stage.json', state)

    # -- inside --------------------------------------------------------------------------------------------------
    def run_dir(self, run_name): return self.runs_folder / run_name

    def finished_runs(self):
        "Names of this invocation's finished runs."
        return sorted(p.name for p in self.runs_folder.iterdir() if (p / 'summary.json').is_file())

    def finish(self, summary):
        "Write the stage's summary.json (with its folder and key): the mark that this invocation finished."
        summary = dict(summary, stage=self.name, key=self.key)
        if is_rank0():
            write_json(self.folder / 'summary.json', summary)
            self._write_state('finished')
            print(f"results: {self.folder}")
        self.done = dict(summary, path=str(self.folder))
        return self.done

    def mark(self, status):
        "Set a status other than running/finished (e.g. 'lr_find': an lr-finder invocation, never resumed)."
        self._write_state(status)

    def __exit__(self, kind, error, tb):
        if not is_rank0():
            shutil.rmtree(self.folder, ignore_errors=True)
            return False
        if kind is None: return False
        has_work = any((p / 'summary.json').is_file() or (p / 'last.pth').is_file()
                       for p in self.folder.iterdir() if p.is_dir())
        if not has_work and not self.resumed:
            shutil.rmtree(self.folder, ignore_errors=True)  # nothing was trained: leave nothing behind
            for p in self.made:  # nor the <out>/<stage>/ folders this invocation made
                try: p.rmdir()
                except OSError: break  # not empty (another invocation wrote there meanwhile): kept
            return False
        status = 'interrupted' if issubclass(kind, KeyboardInterrupt) else 'failed'
        try: self._write_state(status, error=error_line(error) if str(error) else kind.__name__)
        except OSError as e:  # e.g. the full disk that stopped the run: its own error is the one to show
            print(f"{self.folder / 'stage.json'}: status {status} not recorded ({error_line(e)})", file=sys.stderr)
        print(f"{self.name} {status}: its finished runs are kept in {self.folder} "
              f"({', '.join(self.finished_runs()) or 'none finished; an interrupted run can continue'}); "
              f"rerun the same command with --resume to continue", file=sys.stderr)
        return False


