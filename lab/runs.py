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
import json, math, os, platform, shutil, socket, subprocess, sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

__all__ = ['stage_dir', 'Stage', 'latest_stage_summary', 'finished_stages', 'stage_choice', 'chosen_recipe', 'read_stage',
           'write_json', 'read_json', 'environment_info', 'git_state', 'is_rank0', 'dist_rank', 'is_distributed', 'init_distributed',
           'StageMismatch', 'key_difference']

REPO = Path(__file__).resolve().parents[1]


def _clean(o):
    "JSON-safe copy: Paths to str, NaN/inf to None, numpy/torch scalars to Python, tuples to lists, slices to text."
    if isinstance(o, dict): return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)): return [_clean(v) for v in o]
    if isinstance(o, Path): return str(o)
    if isinstance(o, slice): return f'slice({o.start}, {o.stop})'
    if hasattr(o, 'item') and getattr(o, 'ndim', 1) == 0: o = o.item()
    if isinstance(o, float) and not math.isfinite(o): return None
    return o


def write_json(path, obj):
    "Write `obj` as indented JSON (via a temporary file, so a reader never sees half of it)."
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    tmp.write_text(json.dumps(_clean(obj), indent=2, default=str))
    os.replace(tmp, path)
    return path


def read_json(path):
    "Read a JSON file, with an error that names it when it is missing or broken."
    path = Path(path)
    try: return json.loads(path.read_text())
    except FileNotFoundError: raise FileNotFoundError(f"{path}: no such file (expected a JSON summary)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e: raise ValueError(f"{path}: not valid JSON ({e})") from None


def dist_rank():
    "This process's rank under torchrun (0 without distributed training)."
    return int(os.environ.get('RANK', 0))


def is_rank0(): return dist_rank() == 0


def is_distributed():
    "Whether this process is one of several training one model under torchrun (WORLD_SIZE > 1)."
    return int(os.environ.get('WORLD_SIZE', 1)) > 1


def init_distributed():
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPUs), take this rank's GPU, and
    silence the other ranks' stdout, so that one rank speaks and writes. A no-op otherwise."""
    if not is_distributed(): return
    import torch, torch.distributed as dist
    if torch.cuda.is_available(): torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
    if not dist.is_initialized(): dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')
    if not is_rank0(): sys.stdout = open(os.devnull, 'w')


def _stamp(root):
    stamp = datetime.now().strftime('%Y%m%d-%H%M%S')
    name, k = stamp, 1
    while (root / name).exists() or (root / f'.{name}.partial').exists():
        k += 1; name = f'{stamp}-{k}'
    return name


@contextmanager
def stage_dir(out, stage):
    "Yield a fresh folder for one invocation of a non-training `stage`; publish it on success, remove it on failure."
    root = Path(out) / stage
    root.mkdir(parents=True, exist_ok=True)
    name = _stamp(root)
    partial = root / f'.{name}.partial'
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    final = root / name
    os.replace(partial, final)
    print(f"results: {final}")


def git_state():
    "(short commit, whether tracked files differ from it) of the lab's checkout; (None, None) outside git."
    def git(*args):
        return subprocess.run(['git', *args], capture_output=True, text=True, cwd=REPO, timeout=10).stdout.strip()
    try:
        commit = git('rev-parse', '--short', 'HEAD') or None
        return commit, (bool(git('status', '--porcelain', '--untracked-files=no')) if commit else None)
    except Exception: return None, None


def environment_info():
    "Device, library versions, host, commit (and whether the tree was dirty): where a number came from."
    import torch, torchvision, fastai, numpy
    cuda = torch.cuda.is_available()
    commit, dirty = git_state()
    return dict(device=torch.cuda.get_device_name() if cuda else f'cpu ({os.cpu_count()} cores)',
                python=sys.version.split()[0], torch=torch.__version__, torchvision=torchvision.__version__,
                fastai=fastai.__version__, numpy=numpy.__version__, platform=platform.platform(),
                host=socket.gethostname(), git_commit=commit, git_dirty=dirty, torch_threads=torch.get_num_threads(),
                started=datetime.now().isoformat(timespec='seconds'),
                command=' '.join([Path(sys.argv[0]).name] + sys.argv[1:]))


def _same(a, b): return json.dumps(_clean(a), sort_keys=True) == json.dumps(_clean(b), sort_keys=True)


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
        self.opts, self.name, self.key = opts, name, _clean(key)
        self.root = Path(opts.out) / name
        self.folder, self.runs_folder, self.done, self.resumed = None, None, None, False

    # -- opening -------------------------------------------------------------------------------------------------
    def _find_resumable(self):
        if not self.root.exists(): return None
        folders = sorted((p for p in self.root.iterdir() if (p / 'stage.json').is_file()), key=lambda p: p.name)
        for p in reversed(folders):
            state = read_json(p / 'stage.json')
            if state.get('status') == 'lr_find': continue
            finished = (p / 'summary.json').is_file()
            if not _same(state.get('key'), self.key):
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
                self.root.mkdir(parents=True, exist_ok=True)
                self.folder = self.root / _stamp(self.root)
                self.folder.mkdir()
            if not self.done: self._write_state('running')
        self.runs_folder = self.folder = _broadcast_path(self.folder)
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
            return False
        status = 'interrupted' if issubclass(kind, KeyboardInterrupt) else 'failed'
        self._write_state(status, error=str(error).splitlines()[0] if str(error) else kind.__name__)
        print(f"{self.name} {status}: its finished runs are kept in {self.folder} "
              f"({', '.join(self.finished_runs()) or 'none finished; an interrupted run can continue'}); "
              f"rerun the same command with --resume to continue", file=sys.stderr)
        return False


def _broadcast_path(path):
    "Under torchrun, rank 0's `path` on every rank (all ranks must read and load the same checkpoints)."
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1: return path
    box = [str(path) if path is not None else None]
    dist.broadcast_object_list(box, src=0)
    return Path(box[0])


def read_stage(folder):
    "A finished stage folder's summary (with its path), or a FileNotFoundError that says it is not one."
    folder = Path(folder)
    if not (folder / 'summary.json').is_file():
        what = 'an unfinished stage run' if (folder / 'stage.json').is_file() else 'not a stage run folder'
        raise FileNotFoundError(f"{folder}: no summary.json ({what})")
    return dict(read_json(folder / 'summary.json'), path=str(folder))


def finished_stages(out, stage):
    "The summaries (with 'path') of the finished invocations of `stage` under `out`, newest first."
    root = Path(out) / stage
    done = sorted((p for p in root.glob('*/summary.json') if not p.parent.name.startswith('.')),
                  key=lambda p: p.parent.name) if root.exists() else []
    for p in reversed(done): yield dict(read_json(p), path=str(p.parent))


def latest_stage_summary(out, stage, like=None, say=True):
    """The summary (with 'path') of the newest finished invocation of `stage` under `out`, or None.
    `like`: a resolved Recipe; only an invocation on the same data, classes, split and profile counts (newer ones on
    other data are named in a notice)."""
    for summary in finished_stages(out, stage):
        if like is None or _same(summary.get('data_key'), like.data_key()): return summary
        if say:
            print(f"NOTICE: {summary['path']} is not used: it ran on other data, classes, split or profile "
                  f"({key_difference(summary.get('data_key'), like.data_key())})")
    return None


def key_difference(theirs, ours, names=('there', 'here')):
    "The fields in which two data keys differ, e.g. \"classes: 'n1,n2' there, 'n1,n2,n3' here\" (or 'no key recorded')."
    theirs, ours = theirs or {}, ours or {}
    diff = [f"{k}: {theirs.get(k)!r} {names[0]}, {ours.get(k)!r} {names[1]}" for k in sorted(set(theirs) | set(ours))
            if not _same(theirs.get(k), ours.get(k))]
    return '; '.join(diff)[:300] or 'no key recorded'


def chosen_recipe(summary):
    "The Recipe of the best variant of a finished stage (its summary, as `latest_stage_summary` or `read_stage` give it)."
    from .recipe import Recipe
    return Recipe.from_dict(summary['best_recipe'], source=f"{summary['path']}/summary.json")


def stage_choice(opts, stage, recipe):
    """The recipe to train after `stage`: `recipe` with the model chosen by `stage` (its best variant), and the reason.

    The choice comes from the stage folder given with --from, else from the newest finished invocation of `stage`
    under --out on the same data, classes, split and profile; without one, `recipe` keeps its documented default
    model, and the reason says so. Model flags given on the command line win over the choice."""
    from .data import resolve_data
    recipe = resolve_data(recipe)  # compared by its explicit data folder and class list
    if opts.from_:
        summary = read_stage(opts.from_)
        if summary.get('stage') != stage:
            raise ValueError(f"--from {opts.from_}: a {summary.get('stage')} run, expected a {stage} run")
        if not _same(summary.get('data_key'), recipe.data_key()):
            print(f"WARNING: --from {opts.from_} ran on other data, classes, split or profile "
                  f"({key_difference(summary.get('data_key'), recipe.data_key())}); used because it was named")
    else: summary = latest_stage_summary(opts.out, stage, like=recipe)
    overrides = opts.model_overrides
    if summary is None:
        print(f"NOTICE: no finished {stage} run on this data under {opts.out}; using the documented default "
              f"model {dict(recipe.model)}")
        return recipe, f"default (no {stage} run on this data)"
    model = dict(chosen_recipe(summary).model, **overrides)
    print(f"using the choice of {stage}: {summary['best']} {model} ({summary['path']})"
          + (f"; model flags {overrides} override it" if overrides else ''))
    from dataclasses import replace
    return replace(recipe, model=model), f"{stage}: {summary['conclusion']}"
