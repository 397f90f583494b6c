"""train_sccan.py and test_sccan.py end to end on a tiny synthetic benchmark (CPU, small model):
checkpoints in the authors' format, exact resumption after SIGINT / SIGKILL, clear errors."""
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

import test_sccan
import train_sccan
from helpers import TINY, assert_one_error, files_below, make_pascal_config, run_cli
from model import CheckpointError
from util import distributed
from util import log as log_module
from util.config import REPO_ROOT, ConfigError, load_config, merged_opts
from util.datasets import episode_dataset
from util.determinism import CUBLAS_VARIABLE, CUBLAS_WORKSPACE
from util.evaluation import checkpoint_evaluation
from util.evaluation.evaluate import TIMINGS
from util.training import FAILURES, Hook, NonFiniteLoss, train
from util.training import scalars as scalars_module
from util.training import trainer as trainer_module

PYTHON = sys.executable
# the tiny model at 33×33 (helpers.TINY), 2 episodes a step, 4 validation episodes
RUN_OPTS = TINY + ['batch_size', '2', 'batch_size_val', '2', 'test_num', '4', 'print_freq', '1',
                   'save_freq', '1']
RUN = os.path.join('pascal', 'SCCAN', 'split0', 'resnet14')
SNAPSHOT = os.path.join(RUN, 'snapshot')


@pytest.fixture(scope='module')
def bench(tmp_path_factory):
    """Synthetic PASCAL-layout data and a config pointing at it."""
    root = tmp_path_factory.mktemp('bench')
    config = make_pascal_config(str(root), 'Train:\n  epochs: 2\n', n_train=20, n_val=10)
    return {'root': root, 'config': config}


def env_1_thread():
    # one thread, as the tests in this process (tests/conftest.py): the same float sums
    return {**os.environ, 'OMP_NUM_THREADS': '1'}


def train_cmd(bench, exp_dir, *extra):
    return [PYTHON, os.path.join(REPO_ROOT, 'train_sccan.py'), '--config', bench['config'],
            *extra, '--opts', *RUN_OPTS, 'exp_dir', str(exp_dir)]


def latest(exp_dir):
    return os.path.join(exp_dir, SNAPSHOT, 'train_latest.pth')


def weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:3]}'


def run_train(bench, exp_dir, capsys, *extra, opts=()):
    """(status, stdout, stderr) of train_sccan.py run in this process."""
    argv = ['--config', bench['config'], *extra, '--opts',
            *merged_opts(RUN_OPTS, ['exp_dir', str(exp_dir), *opts])]
    return run_cli(train_sccan.main, argv, capsys, *FAILURES)


def run_test_sccan(bench, weight, capsys, *extra, opts=()):
    """(status, stdout, stderr) of test_sccan.py run in this process."""
    argv = ['--config', bench['config'], '--weight', str(weight), *extra, '--opts',
            *merged_opts(RUN_OPTS, opts)]
    return run_cli(test_sccan.main, argv, capsys)


@pytest.fixture(scope='module')
def reference_run(bench):
    """An uninterrupted 2-epoch run: the target of the resumption tests."""
    exp = bench['root'] / 'reference'
    assert train_sccan.main(['--config', bench['config'], '--opts', *RUN_OPTS,
                             'exp_dir', str(exp)]) == 0
    return {'exp': exp}


def test_training_writes_authors_format_checkpoints_that_test_sccan_reads(bench, reference_run,
                                                                           capsys):
    exp = reference_run['exp']
    snapshot = os.path.join(exp, SNAPSHOT)
    best = [f for f in os.listdir(snapshot) if f.startswith('train_epoch_')]
    assert len(best) == 1, os.listdir(snapshot)
    ckpt = torch.load(os.path.join(snapshot, best[0]), map_location='cpu', weights_only=False)
    assert {'epoch', 'state_dict', 'optimizer', 'optimizer_swin'} <= ckpt.keys()
    assert (ckpt['architecture']['layers'], ckpt['shot']) == (14, 1)
    assert 'down_query.0.weight' in ckpt['state_dict'] and 'cls_meta.3.bias' in ckpt['state_dict']
    assert not any(k.startswith('module.') for k in ckpt['state_dict'])
    last = torch.load(latest(exp), map_location='cpu', weights_only=False)
    n = last['iteration'] // 2
    assert last['iteration'] == 2 * n and last['epoch'] == 1            # 2 epochs done
    result = os.path.join(exp, RUN, 'result')
    with open(os.path.join(result, 'train.log')) as f:
        assert 'validation at epoch 0.5 (step' in f.read()    # mid-epoch validation in the 2nd
    assert any(f.startswith('events.') for f in
               os.listdir(os.path.join(result, 'train_tensorboard')))

    status, _, err = run_test_sccan(bench, os.path.join(snapshot, best[0]), capsys, '--seeds',
                                    '321', '7', '--episodes', '4', '--viz', '2')
    assert status == 0, err
    assert 'mIoU' in err and '±' in err
    report_path = os.path.join(snapshot, best[0][:-4] + '_test_pascal_split0_1shot_4ep_seed321-7.json')
    with open(report_path) as f:
        report = json.load(f)
    assert [s['seed'] for s in report['seeds']] == [321, 7]
    assert all(s['episodes'] == 4 and len(s['class_IoU']) == 5 for s in report['seeds'])
    assert report['mean']['mIoU'] == pytest.approx(
        sum(s['mIoU'] for s in report['seeds']) / 2)
    assert report['overrides']['seeds'] == [321, 7] and report['overrides']['viz'] == 2
    viz = report_path[:-len('.json')] + '_viz'
    assert len(os.listdir(viz)) == 2


def run_until_first_checkpoint_then(sig, bench, exp):
    """train_sccan.py in a process of its own, sent `sig` once its first checkpoint is written;
    (exit status, stderr)."""
    proc = subprocess.Popen(train_cmd(bench, exp), env=env_1_thread(), cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not os.path.exists(latest(exp)):
        assert proc.poll() is None, f'training ended before its first checkpoint: ' \
                                    f'{proc.stderr.read()[-2000:]}'
        assert time.time() < deadline, 'no checkpoint after 240 s'
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=240)
    return proc.returncode, err


def test_a_killed_and_resumed_run_ends_with_the_same_weights(bench, reference_run, capsys):
    exp = bench['root'] / 'killed'
    code, err = run_until_first_checkpoint_then(signal.SIGKILL, bench, exp)
    assert code == -signal.SIGKILL
    stopped_at = torch.load(latest(exp), map_location='cpu', weights_only=False)['iteration']
    # episodes do not depend on who loads them: resuming with loader workers changes nothing
    status, _, err = run_train(bench, exp, capsys, '--resume', 'train_latest.pth',
                               opts=('workers', '2'))
    assert status == 0, err
    assert f'at iteration {stopped_at}' in err
    assert_same_weights(weights(latest(exp)), weights(latest(reference_run['exp'])))


def driver_case(bench, name, sig, target, phase, validation=1, opts=()):
    """A case of tests/signal_driver.py: train_sccan.py with 2 loader workers in exp_dir
    <bench>/stops/<name>, sent `sig` during its first step or at the first batch of its
    `validation`-th validation."""
    exp = bench['root'] / 'stops' / name
    argv = ['--config', bench['config'], '--opts',
            *merged_opts(RUN_OPTS, ['exp_dir', str(exp), 'workers', '2', *opts])]
    return {'name': name, 'signal': sig, 'target': target, 'phase': phase,
            'validation': validation, 'argv': argv, 'exp': str(exp)}


def checkpoint_of(path):
    return torch.load(path, map_location='cpu', weights_only=False)


def test_a_stop_signal_to_the_process_or_its_group_saves_at_once_and_resumes_exactly(
        bench, reference_run, capsys):
    """SIGINT, SIGTERM and SIGUSR1 (Slurm's --signal), sent to the training process or to its
    whole process group (its DataLoader workers too), during a step or a validation: status 130
    and one line, the latest checkpoint of the last finished step, a validation abandoned at
    its next batch. A run stopped during a validation, resumed, does it again and ends as an
    uninterrupted run."""
    cases = [driver_case(bench, f'{sig}-{target}-{phase}', sig, target, phase,
                         opts=('max_iters', '2', 'batch_size_val', '1'))
             for sig in ('SIGINT', 'SIGTERM', 'SIGUSR1') for target in ('process', 'group')
             for phase in ('training', 'validation')]
    # the second validation: half-way through the second epoch
    cases.append(driver_case(bench, 'resumable', 'SIGTERM', 'group', 'validation', validation=2))
    done = subprocess.run([PYTHON, os.path.join(REPO_ROOT, 'tests', 'signal_driver.py'),
                           json.dumps(cases)], cwd=REPO_ROOT, env=env_1_thread(),
                          start_new_session=True, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r['name']: r for r in map(json.loads, done.stdout.splitlines())}
    assert results.keys() == {case['name'] for case in cases}, done.stderr[-3000:]
    uninterrupted = checkpoint_of(latest(reference_run['exp']))
    n = uninterrupted['iteration'] // 2                     # steps per epoch
    half_way = n + round(n / 2) + 1                         # the step of the second validation
    for case in cases:
        result, exp = results[case['name']], case['exp']
        last = result['err'].rstrip().splitlines()[-1]
        stopped = checkpoint_of(latest(exp))
        where = f'{case["name"]}: {result["err"][-1500:]}'
        assert result['status'] == 130 and 'Traceback' not in result['err'], where
        assert result['predictions_after_signal'] == 0, where       # not a batch more
        if case['name'] == 'resumable':
            assert stopped['iteration'] == half_way
            assert stopped['progress']['pending_validation'] == 0.5
            assert last == (f'interrupted: stopped at iteration {half_way} during the validation '
                            f'at epoch 0.5; continue with --resume {latest(exp)}'), where
        elif case['phase'] == 'training':
            assert stopped['iteration'] == 1 and stopped['progress']['pending_validation'] is None
            assert last == f'interrupted: stopped at iteration 1; continue with --resume {latest(exp)}'
        else:
            label = round(2 / n - 1, 3)         # the authors' label of step 2: epochs done - 1
            assert stopped['iteration'] == 2 and stopped['progress']['pending_validation'] == label
            assert last == (f'interrupted: stopped at iteration 2 during the validation at epoch '
                            f'{label}; continue with --resume {latest(exp)}'), where
    exp = cases[-1]['exp']
    status, _, err = run_train(bench, exp, capsys, '--resume', 'train_latest.pth')
    assert status == 0, err
    assert f'validation at epoch 0.5 (step {half_way})' in err
    resumed = checkpoint_of(latest(exp))
    assert_same_weights(resumed['state_dict'], uninterrupted['state_dict'])
    kept = ('iteration', 'best_miou', 'best_epoch', 'val_num', 'keep_epoch', 'pending_validation')
    assert ({k: resumed['progress'][k] for k in kept} ==
            {k: uninterrupted['progress'][k] for k in kept})


FAKE_SLURM = {
    # srun runs its task (here in its own process: a signal for srun reaches the task)
    'srun': 'while [[ $1 == -* ]]; do shift; done\nexec "$@"\n',
    # torchrun must be told to hand SIGUSR1 on; one process, started as the script itself
    'torchrun': '[[ " $* " == *" --signals-to-handle="*SIGUSR1* ]] || exit 3\n'
                'while [[ $1 == -* ]]; do shift; done\nexec "$PYTHON" "$@"\n',
    'scontrol': 'echo "$*" >> "$SCONTROL_LOG"\n',
    # a training that records its arguments and the signal that stops it
    'training': 'echo "$*" > "$TRAINING_LOG"\n'
                'for sig in USR1 TERM; do trap "echo $sig >> $TRAINING_LOG; exit 130" $sig; done\n'
                'echo training\nwhile :; do sleep 0.05; done\n',
}


@pytest.fixture
def fake_slurm(tmp_path):
    """A folder of FAKE_SLURM's commands, for PATH."""
    folder = tmp_path / 'bin'
    folder.mkdir()
    for name, body in FAKE_SLURM.items():
        (folder / name).write_text('#!/bin/bash\n' + body)
        (folder / name).chmod(0o755)
    return folder


SLURM_SCRIPT = os.path.join(REPO_ROOT, 'tools', 'train_slurm.sh')


def slurm_job(fake_bin, args, signal_after=None, python=PYTHON, script=SLURM_SCRIPT, seconds=240):
    """tools/train_slurm.sh (or `script`) `args` run as Slurm runs a batch job, with
    fake_slurm's commands, sent `signal_after` = (signal, line) once its output shows the line,
    as Slurm's --signal=B:USR1 or a preemption signals the batch script. (status, output); a job
    still running after `seconds` is killed with everything it started (status -9)."""
    env = {**env_1_thread(), 'PATH': f'{fake_bin}{os.pathsep}{os.environ["PATH"]}',
           'PYTHON': python, 'SLURM_JOB_ID': '42', 'SLURM_SUBMIT_DIR': REPO_ROOT,
           'SCONTROL_LOG': str(fake_bin / 'scontrol.log'),
           'TRAINING_LOG': str(fake_bin / 'training.log')}
    job = subprocess.Popen(['bash', script, *args],
                           env=env, cwd='/', stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    watchdog = threading.Timer(seconds, os.killpg, (job.pid, signal.SIGKILL))
    watchdog.start()
    output = []
    try:
        for line in job.stdout:
            output.append(line)
            if signal_after and signal_after[1] in line:
                job.send_signal(signal_after[0])
                signal_after = None
        return job.wait(), ''.join(output)
    finally:
        watchdog.cancel()


@pytest.mark.parametrize('sig, requeued', [(signal.SIGUSR1, True), (signal.SIGTERM, False)],
                         ids=['USR1-time-limit', 'TERM-preempted-or-cancelled'])
def test_the_slurm_script_passes_the_signal_on_and_requeues_at_the_time_limit(fake_slurm, sig,
                                                                             requeued):
    """tools/train_slurm.sh hands the signal for the batch script on to the training (through
    srun and torchrun, told to pass SIGUSR1 on), always with --auto-resume; it requeues the job
    after SIGUSR1 (the time limit), not after SIGTERM (Slurm requeues a preempted job itself;
    a cancelled one stays cancelled)."""
    status, out = slurm_job(fake_slurm, ['--config', 'c.yaml', '--opts', 'epochs', '3'],
                            (sig, 'training'), python=str(fake_slurm / 'training'))
    assert status == 130, out
    assert (fake_slurm / 'training.log').read_text() == (
        f'train_sccan.py --auto-resume --config c.yaml --opts epochs 3\n{sig.name[3:]}\n')
    requeues = fake_slurm / 'scontrol.log'
    assert (requeues.read_text() if requeues.exists() else '') == ('requeue 42\n' if requeued else '')


def test_a_signal_before_the_script_knows_the_trainings_process_reaches_it(fake_slurm, tmp_path):
    """A signal that comes between the training's start and the script's `step=$!` (a batch
    script starved of CPU on a busy node) is passed on once the process id is known: here the
    script is slowed down there, and the training prints its line in the meantime. Without
    that the signal was lost and the job ran on to its time limit."""
    script = tmp_path / 'train_slurm.sh'
    text = open(SLURM_SCRIPT).read()
    assert text.count('\nstep=$!\n') == 1
    script.write_text(text.replace('\nstep=$!\n', '\nsleep 0.5; step=$!\n'))
    status, out = slurm_job(fake_slurm, ['--config', 'c.yaml'], (signal.SIGTERM, 'training'),
                            python=str(fake_slurm / 'training'), script=str(script), seconds=30)
    assert status == 130, out
    assert (fake_slurm / 'training.log').read_text().endswith('\nTERM\n')


def test_a_job_stopped_by_slurm_continues_exactly_when_requeued(bench, reference_run, fake_slurm,
                                                                 capsys):
    """The training under tools/train_slurm.sh stops on Slurm's SIGUSR1 with its latest
    checkpoint; the requeued job (train_sccan.py --auto-resume) ends as an uninterrupted run."""
    exp = bench['root'] / 'slurm'
    status, out = slurm_job(fake_slurm, ['--config', bench['config'], '--opts', *RUN_OPTS,
                                         'exp_dir', str(exp)], (signal.SIGUSR1, 'epoch [1/2][2/'))
    assert status == 130 and 'requeueing job 42' in out, out[-3000:]
    stopped_at = checkpoint_of(latest(exp))['iteration']
    status, _, err = run_train(bench, exp, capsys, '--auto-resume')
    assert status == 0 and f'at iteration {stopped_at}' in err, err
    assert_same_weights(weights(latest(exp)), weights(latest(reference_run['exp'])))


def test_seed_deterministic_holds_in_every_step_and_changes_nothing_on_the_cpu(
        bench, reference_run, capsys, monkeypatch):
    """Training twice gives the same weights (the CPU's kernels are deterministic already), the
    second time with seed_deterministic, whose settings hold in every step and end with the run;
    the cuBLAS variable is set for the rest of the process (it must come before CUDA work)."""
    monkeypatch.setenv(CUBLAS_VARIABLE, 'set')           # so that monkeypatch removes it again
    monkeypatch.delenv(CUBLAS_VARIABLE)
    settings = []
    step = trainer_module.forward_backward

    def recorded(*args):
        settings.append((torch.are_deterministic_algorithms_enabled(),
                         torch.backends.cudnn.deterministic))
        return step(*args)
    monkeypatch.setattr(trainer_module, 'forward_backward', recorded)
    exp = bench['root'] / 'deterministic'
    status, _, err = run_train(bench, exp, capsys, opts=('seed_deterministic', 'True'))
    assert status == 0, err
    assert len(settings) > 1 and set(settings) == {(True, True)}
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert os.environ[CUBLAS_VARIABLE] == CUBLAS_WORKSPACE
    assert_same_weights(weights(latest(exp)), weights(latest(reference_run['exp'])))

    scored = []
    run_episodes = checkpoint_evaluation.run_episodes

    def recorded_episodes(*args, **kwargs):
        scored.append(torch.are_deterministic_algorithms_enabled())
        return run_episodes(*args, **kwargs)
    monkeypatch.setattr(checkpoint_evaluation, 'run_episodes', recorded_episodes)
    reports = []
    for flag in ('True', 'False'):
        out = bench['root'] / f'deterministic_{flag}.json'
        status, _, err = run_test_sccan(bench, latest(exp), capsys, '--episodes', '4', '--out',
                                        str(out), opts=('seed_deterministic', flag))
        assert status == 0, err
        reports.append(json.loads(out.read_text())['seeds'][0])
    assert scored == [True, False] and not torch.are_deterministic_algorithms_enabled()
    for report in reports:
        assert all(report.pop(key) > 0 for key in TIMINGS)
    assert reports[0] == reports[1]


def test_truncated_checkpoint_is_refused(bench, reference_run, tmp_path, capsys):
    broken = tmp_path / 'broken.pth'
    data = open(latest(reference_run['exp']), 'rb').read()
    broken.write_bytes(data[:len(data) // 3])
    status, _, err = run_train(bench, tmp_path / 'exp', capsys, '--resume', str(broken))
    assert_one_error(status, err, 'truncated or corrupted')


@pytest.fixture
def nan_at_step_3(monkeypatch):
    """The real net, whose training loss is NaN at its third step."""
    build = trainer_module.ready_model

    def build_with_nan(*args):
        net = build(*args)
        forward, calls = net.forward, []

        def nan_forward(*inputs):
            pred, loss = forward(*inputs)
            calls.append(1)
            return pred, loss * float('nan') if len(calls) == 3 else loss
        net.forward = nan_forward
        return net
    monkeypatch.setattr(trainer_module, 'ready_model', build_with_nan)


def test_nan_loss_stops_naming_the_iteration(bench, tmp_path, nan_at_step_3):
    argv = ['--config', bench['config'], '--opts', *RUN_OPTS, 'exp_dir', str(tmp_path),
            'evaluate', 'False']
    with pytest.raises(NonFiniteLoss, match=r'at iteration 3 \(epoch 1, step 3/'):
        train_sccan.main(argv)
    assert not os.path.exists(latest(tmp_path))      # nothing written after the bad step


def test_nan_loss_skipped_with_on_nonfinite_skip(bench, tmp_path, nan_at_step_3):
    cfg = load_config(bench['config'], [*RUN_OPTS, 'exp_dir', str(tmp_path), 'evaluate', 'False',
                                        'epochs', '1', 'on_nonfinite', 'skip'])
    trainer = train(cfg, distributed.setup())
    assert trainer.progress.skipped_steps == 1
    assert all(torch.isfinite(v).all() for v in weights(latest(tmp_path)).values()
               if v.is_floating_point())


def test_a_list_that_is_a_folder_is_named_so(bench, tmp_path, capsys):
    status, _, err = run_train(bench, tmp_path, capsys, opts=('train_list', str(tmp_path)))
    assert_one_error(status, err, f'list file {tmp_path} is a folder, not a file (--opts '
                                  'train_list): give the list')
    assert 'make_synthetic' not in err


def test_missing_data_root_and_config_are_clear_errors(bench, tmp_path, capsys):
    status, _, err = run_train(bench, tmp_path, capsys, opts=('data_root', str(tmp_path / 'nowhere')))
    assert_one_error(status, err, f'data root not found: {tmp_path / "nowhere"}')
    status, _, err = run_cli(train_sccan.main, ['--config', 'config/pascal/nope.yaml'], capsys)
    assert_one_error(status, err, 'config file not found: config/pascal/nope.yaml')


def test_test_sccan_names_missing_or_mismatching_checkpoints(bench, reference_run, tmp_path):
    argv = ['--config', bench['config'], '--opts', *RUN_OPTS, 'exp_dir', str(tmp_path)]
    with pytest.raises(ConfigError, match='no checkpoint to test: give --weight'):
        test_sccan.main(argv)
    with pytest.raises(FileNotFoundError, match='checkpoint not found: nope.pth'):
        test_sccan.main(['--weight', 'nope.pth'] + argv)
    with pytest.raises(CheckpointError, match=r'layers 14 \(config: 101\)'):
        test_sccan.main(['--weight', latest(reference_run['exp'])] + argv + ['layers', '101'])
    with pytest.raises(CheckpointError, match='trained with shot 1 but the config has shot 5'):
        test_sccan.main(['--weight', latest(reference_run['exp'])] + argv + ['shot', '5'])


# ---- the user's files and numbers: refusals before anything is written or computed ----

def test_a_run_into_a_folder_held_by_a_live_process_stops_naming_it(bench, tmp_path, capsys):
    holder = subprocess.Popen(['sleep', '60'])
    try:
        lock = tmp_path / RUN / 'train.lock'
        lock.parent.mkdir(parents=True)
        lock.write_text(json.dumps({'pid': holder.pid, 'host': socket.gethostname(),
                                    'started': 'earlier', 'command': 'train_sccan.py ...'}))
        before = files_below(tmp_path)
        status, _, err = run_train(bench, tmp_path, capsys)
        assert_one_error(status, err, f'{tmp_path / RUN} is in use by another run: process '
                                    f'{holder.pid} on host {socket.gethostname()}')
        assert files_below(tmp_path) == before          # no log line, no checkpoint, same lock
    finally:
        holder.kill()
        holder.wait()


def test_a_new_run_over_an_earlier_ones_checkpoints_is_refused(bench, reference_run, tmp_path,
                                                               capsys):
    exp = reference_run['exp']
    before = files_below(exp)
    status, _, err = run_train(bench, exp, capsys)
    assert_one_error(status, err, 'holds checkpoints of an earlier run', 'train_latest.pth',
                   'that a new run would replace', '--resume train_latest.pth', '--overwrite')
    # resumed from a checkpoint of another folder: said so, not as if --resume were not given
    other = shutil.copyfile(latest(exp), tmp_path / 'elsewhere.pth')
    status, _, err = run_train(bench, exp, capsys, '--resume', str(other))
    assert_one_error(status, err, f'that a run resumed from {other} would replace: continue that '
                     'run with --resume train_latest.pth')
    assert files_below(exp) == before


def test_max_iters_stale_files_and_overwrite(bench, tmp_path, capsys):
    """A smoke run of 2 steps; resuming after a kill takes over the dead process's lock and
    removes the temporaries of its own killed saves only; --overwrite starts over."""
    fast = ('evaluate', 'False')
    status, _, err = run_train(bench, tmp_path, capsys, opts=('max_iters', '2', *fast))
    assert status == 0 and 'max_iters 2 reached' in err, err
    assert torch.load(latest(tmp_path), weights_only=False)['iteration'] == 2
    run = tmp_path / RUN
    killed = run / 'snapshot' / '.train_latest.pth.k1ll3d_x.tmp'
    others = [run / 'snapshot' / '.train5_latest.pth.k1ll3d_x.tmp', run / 'snapshot' / 'notes.tmp']
    for path in [killed] + others:
        path.write_bytes(b'half a checkpoint')
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True)
    (run / 'train.lock').write_text(json.dumps({'pid': int(dead.stdout), 'command': 'killed',
                                                'host': socket.gethostname()}))
    status, _, err = run_train(bench, tmp_path, capsys, '--resume', 'train_latest.pth',
                               opts=('max_iters', '3', *fast))
    assert status == 0, err
    assert f'took over the lock of process {int(dead.stdout)}' in err
    assert f'removed {killed}, left by a checkpoint save that was killed' in err
    assert not killed.exists() and all(p.exists() for p in others)
    assert not (run / 'train.lock').exists()
    assert torch.load(latest(tmp_path), weights_only=False)['iteration'] == 3

    status, _, err = run_train(bench, tmp_path, capsys, '--overwrite', opts=('max_iters', '1', *fast))
    assert status == 0 and 'replacing the earlier run: deleted' in err, err
    assert torch.load(latest(tmp_path), weights_only=False)['iteration'] == 1
    with open(run / 'result' / 'train.log') as f:
        assert 'resumed' not in f.read()         # the earlier run's log went with it


def full_disk(*args):
    raise OSError(errno.ENOSPC, 'No space left on device')


@pytest.mark.parametrize('full', ['checkpoint and scalars', 'scalars'])
def test_a_full_disk_while_saving_is_one_line(bench, tmp_path, capsys, monkeypatch, full):
    """The error names the file that could not be written: the checkpoint, also when the
    TensorBoard writer then fails to write its last scalars (an unnamed error), which names its
    folder when it is the only one."""
    if 'checkpoint' in full:
        monkeypatch.setattr(torch, 'save', full_disk)
    if 'scalars' in full:       # a TensorBoard writer whose last flush finds the disk full
        writer = type('Writer', (), {'add_scalar': lambda *args: None, 'close': full_disk})()
        monkeypatch.setattr(scalars_module, 'scalar_writer', lambda *args: writer)
    status, _, err = run_train(bench, tmp_path, capsys, opts=('max_iters', '1', 'evaluate', 'False'))
    if 'checkpoint' in full:
        assert_one_error(status, err, f'cannot write {latest(tmp_path)}: no space left on device')
        assert os.listdir(tmp_path / RUN / 'snapshot') == []
    else:
        assert_one_error(status, err, f'cannot write {tmp_path / RUN / "result" / "train_tensorboard"}:'
                                      ' no space left on device')


def test_a_disk_too_full_for_the_checkpoints_stops_the_run_before_it_begins(bench, tmp_path,
                                                                            capsys, monkeypatch):
    """Refused at the start, naming the folder and the room needed; the folders the run made go
    with it."""
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: shutil._ntuple_diskusage(10 ** 9, 10 ** 9, 5000))
    exp = tmp_path / 'exp'
    status, _, err = run_train(bench, exp, capsys)
    assert_one_error(status, err, f'not enough space in {exp / RUN / "snapshot"} for the latest and '
                                  'the best checkpoint: 0.0 MB free')
    assert not exp.exists()


@pytest.mark.parametrize('opts, needles', [
    (('split', '1'), ['was trained with split 0 but', 'has split 1']),
    (('window_size', '2'), ['another architecture', 'window_size 4 (config: 2)']),
    (('zoom_factor', '4'), ['zoom_factor 8 (config: 4)']),
    (('shot', '2'), ['trained with shot 1 but the config has shot 2']),
])
def test_resume_refuses_a_checkpoint_of_another_fold_or_architecture(bench, reference_run, tmp_path,
                                                                     capsys, opts, needles):
    status, _, err = run_train(bench, tmp_path, capsys, '--resume', latest(reference_run['exp']),
                               opts=opts)
    assert_one_error(status, err, *needles)
    assert not os.path.exists(tmp_path / RUN)


def test_resume_refuses_weights_alone_saying_what_they_are_for(bench, reference_run, tmp_path, capsys):
    ckpt = torch.load(latest(reference_run['exp']), weights_only=False)
    weights = tmp_path / 'weights.pth'
    torch.save({k: ckpt[k] for k in ('state_dict', 'architecture', 'shot', 'config')}, weights)
    status, _, err = run_train(bench, tmp_path / 'exp', capsys, '--resume', str(weights))
    assert_one_error(status, err, f"{weights} cannot resume a run: it lacks ['iteration', ",
                     "weights alone, such as the authors' or a shipped model, are for test_sccan.py "
                     'and predict_sccan.py')


def test_resume_refuses_non_finite_weights(bench, reference_run, tmp_path, capsys):
    ckpt = torch.load(latest(reference_run['exp']), weights_only=False)
    ckpt['state_dict']['cls_meta.3.bias'][0] = float('nan')
    bad = tmp_path / 'nan.pth'
    torch.save(ckpt, bad)
    status, _, err = run_train(bench, tmp_path / 'exp', capsys, '--resume', str(bad))
    assert_one_error(status, err, f'{bad} holds NaN or infinite values in 1 of its tensors '
                                '(cls_meta.3.bias)')
    status, _, err = run_test_sccan(bench, bad, capsys)
    assert_one_error(status, err, 'holds NaN or infinite values')


def test_missing_synthetic_data_says_how_to_make_it(bench, tmp_path, capsys):
    root = tmp_path / 'synthetic'
    status, _, err = run_train(bench, tmp_path, capsys, opts=(
        'data_root', str(root), 'train_list', str(root / 'synthetic_train.txt'),
        'val_list', str(root / 'synthetic_val.txt')))
    assert_one_error(status, err, f'data root not found: {root}', '`make demo`',
                   f'tools/make_synthetic.py --root {root}')
    root.mkdir()                 # a list of another name: the generator cannot make it
    status, _, err = run_train(bench, tmp_path, capsys, opts=(
        'data_root', str(root), 'train_list', str(root / 'nope.txt')))
    assert_one_error(status, err, f'list file not found: {root / "nope.txt"}', 'prepare_pascal.py')
    assert 'make_synthetic' not in err


@pytest.mark.parametrize('opts, needles', [
    (('split', '1'), ['was trained with split 0 but', 'has split 1', '--any-split']),
    (('window_size', '2'), ['window_size 4 (config: 2)']),
])
def test_test_sccan_refuses_another_fold_or_architecture(bench, reference_run, tmp_path, capsys,
                                                         opts, needles):
    status, _, err = run_test_sccan(bench, latest(reference_run['exp']), capsys,
                              '--out', str(tmp_path / 'r.json'), opts=opts)
    assert_one_error(status, err, *needles)
    assert os.listdir(tmp_path) == []


def test_test_sccan_refuses_a_seed_given_twice(bench, reference_run, tmp_path, capsys):
    status, _, err = run_test_sccan(bench, latest(reference_run['exp']), capsys,
                                    '--out', str(tmp_path / 'r.json'), '--seeds', '1', '2', '1')
    assert_one_error(status, err, 'seeds [1, 2, 1]: [1] given more than once; a seed draws the '
                                  'same episodes each time')
    assert os.listdir(tmp_path) == []


def test_reports_say_what_they_measured_and_are_never_replaced_silently(bench, reference_run,
                                                                       tmp_path, capsys, monkeypatch):
    weight = tmp_path / 'ckpt.pth'
    os.symlink(latest(reference_run['exp']), weight)
    monkeypatch.setattr(log_module, 'LINE_INTERVAL', 0)     # stderr is no terminal: lines
    status, _, err = run_test_sccan(bench, weight, capsys, '--episodes', '2', '--any-split',
                              opts=('split', '1'))
    assert status == 0, err
    assert 'INFO] seed 321: 1/1 (100 %) in 00:00:' in err, err     # its one batch of 2 episodes
    other_fold = tmp_path / 'ckpt_test_pascal_split1_1shot_2ep_seed321.json'
    with open(other_fold) as f:
        report = json.load(f)
    assert report['split'] == 1 and report['overrides']['any_split'] is True
    assert report['overrides']['opts'][-2:] == ['split', '1']
    quick = tmp_path / 'ckpt_test_pascal_split0_1shot_1ep_seed321.json'
    assert run_test_sccan(bench, weight, capsys, '--episodes', '1')[0] == 0
    assert quick.exists() and other_fold.read_bytes() != quick.read_bytes()

    # the same measurement again, or outputs that exist: refused before the evaluation
    def no_evaluation(*args, **kwargs):
        raise ValueError('the evaluation was reached')
    monkeypatch.setattr(checkpoint_evaluation, 'run_episodes', no_evaluation)
    (tmp_path / 'other_viz').mkdir()
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    before = files_below(tmp_path)
    status, _, err = run_test_sccan(bench, weight, capsys, '--episodes', '1')
    assert_one_error(status, err, f'{quick} exists already; pass --overwrite')
    status, _, err = run_test_sccan(bench, weight, capsys, '--viz', '1', '--out',
                                    str(tmp_path / 'other.json'))
    assert_one_error(status, err, f'{tmp_path / "other_viz"} exists already')
    status, _, err = run_test_sccan(bench, weight, capsys, '--out', str(blocker / 'r.json'))
    assert_one_error(status, err, f'cannot write {blocker}/r.json')
    status, _, err = run_test_sccan(bench, weight, capsys, '--out', str(weight))
    assert_one_error(status, err, f'output {weight} would overwrite the input')
    assert files_below(tmp_path) == before
    status, _, err = run_test_sccan(bench, weight, capsys, '--episodes', '1', '--overwrite')
    assert_one_error(status, err, 'the evaluation was reached')


@pytest.mark.parametrize('workers', ['0', '2'])
def test_a_truncated_image_in_testing_is_one_line_naming_it(bench, reference_run, tmp_path, capsys,
                                                            workers):
    config = make_pascal_config(str(tmp_path), n_train=0, n_val=10)
    image = os.path.join(tmp_path, 'data', 'JPEGImages', '2008_000000.jpg')
    with open(image, 'rb') as f:
        data = f.read()
    with open(image, 'wb') as f:
        f.write(data[:len(data) // 3])
    argv = ['--config', config, '--weight', latest(reference_run['exp']), '--episodes', '4',
            '--out', str(tmp_path / 'r.json'), '--opts', *merged_opts(RUN_OPTS, ['workers', workers])]
    status, _, err = run_cli(test_sccan.main, argv, capsys)
    assert_one_error(status, err, f'{image}: truncated or corrupt JPEG')
    assert not (tmp_path / 'r.json').exists()


# ---- when a run stops, what a resumed run warns about, 5 shots ----

def test_early_stop_after_stop_interval_epochs_without_a_new_best(bench, tmp_path, capsys):
    """With zero learning rates every validation scores what the first did: no new best after
    it, so the run stops when stop_interval (2) more epochs have passed (the authors'
    keep_epoch), after 3 of its 6 epochs."""
    status, _, err = run_train(bench, tmp_path, capsys, opts=(
        'epochs', '6', 'stop_interval', '2', 'base_lr', '0', 'transformer_lr', '0',
        'SubEpoch_val', 'False', 'batch_size', '5'))
    assert status == 0, err
    assert 'early stop: no new best mIoU for 2 epochs' in err
    last = torch.load(latest(tmp_path), weights_only=False)
    steps_per_epoch = len(episode_dataset(load_config(bench['config'], RUN_OPTS), 'train')) // 5
    assert last['iteration'] == 3 * steps_per_epoch and last['epoch'] == 2
    assert last['progress']['val_num'] == 3 and last['progress']['best_epoch'] == 0


def test_resuming_with_a_changed_run_defining_key_warns_naming_it(bench, tmp_path, capsys):
    fast = ('evaluate', 'False')
    assert run_train(bench, tmp_path, capsys, opts=('max_iters', '1', *fast))[0] == 0
    # built from its checkpoint: the backbone's ImageNet weights, moved away since, are not needed
    status, _, err = run_train(bench, tmp_path, capsys, '--resume', 'train_latest.pth',
                               opts=('max_iters', '2', 'backbone_weights', str(tmp_path / 'moved.pth'),
                                     *fast))
    assert status == 0 and 'resuming with changed' not in err, err
    status, _, err = run_train(bench, tmp_path, capsys, '--resume', 'train_latest.pth',
                               opts=('max_iters', '3', 'base_lr', '0.01', *fast))
    assert status == 0, err
    assert ('resuming with changed base_lr (0.005 → 0.01): the run will not match an '
            'uninterrupted one') in err


@pytest.fixture(scope='module')
def bench_5shot(tmp_path_factory):
    """Data with 6 images of every class in both lists (5 supports and a query)."""
    root = tmp_path_factory.mktemp('bench5')
    return make_pascal_config(str(root), n_train=60, n_val=60)


def test_a_5_shot_run_trains_names_its_files_and_tests(bench_5shot, tmp_path, capsys):
    argv = ['--config', bench_5shot, '--opts', *RUN_OPTS, 'exp_dir', str(tmp_path), 'shot', '5',
            'epochs', '1', 'max_iters', '3']
    status, _, err = run_cli(train_sccan.main, argv, capsys, *FAILURES)
    assert status == 0, err
    snapshot = tmp_path / SNAPSHOT
    best = [name for name in os.listdir(snapshot) if name.startswith('train5_epoch_')]
    assert sorted(os.listdir(snapshot)) == sorted(best + ['train5_latest.pth']) and len(best) == 1
    last = torch.load(snapshot / 'train5_latest.pth', weights_only=False)
    assert last['shot'] == 5 and last['iteration'] == 3 and last['config']['shot'] == 5
    assert os.listdir(tmp_path / RUN / 'result') == ['train5.log', 'train5_tensorboard']
    assert not (tmp_path / RUN / 'train5.lock').exists()
    status, _, err = run_cli(test_sccan.main, ['--config', bench_5shot, '--weight',
                                               str(snapshot / best[0]), '--episodes', '3',
                                               '--opts', *RUN_OPTS, 'shot', '5'], capsys)
    assert status == 0, err
    with open(snapshot / (best[0][:-len('.pth')] + '_test_pascal_split0_5shot_3ep_seed321.json')) as f:
        report = json.load(f)
    seed = report['seeds'][0]
    assert report['shot'] == 5 and seed['episodes'] == 3
    # the end-to-end rate, loading included, beside what tools/dev/benchmark.py measures of the model
    assert seed['episodes_per_second'] == pytest.approx(3 / seed['seconds'])


def test_hooks_see_every_step_and_epoch_and_can_replace_the_schedule(bench, tmp_path):
    """A run given its own hooks calls each after every step and epoch, in order; without the
    authors' schedule among them it validates nothing and saves only at the end."""
    class Recorder(Hook):
        def __init__(self):
            self.calls = []

        def after_step(self, trainer, epoch, i):
            self.calls.append(('step', epoch, i, trainer.progress.iteration))

        def after_epoch(self, trainer, epoch, stopping):
            self.calls.append(('epoch', epoch, stopping))

    cfg = load_config(bench['config'], merged_opts(RUN_OPTS, ['exp_dir', str(tmp_path)]))
    recorder = Recorder()
    trainer = train(cfg, distributed.setup(), hooks=[recorder])
    n = trainer.iters_per_epoch
    assert cfg.evaluate and cfg.epochs == 2 and n > 1
    assert recorder.calls == [call for epoch in range(2) for call in (
        *[('step', epoch, i, epoch * n + i + 1) for i in range(n)], ('epoch', epoch, False))]
    assert trainer.progress.val_num == 0 and trainer.checkpointer.saved_iteration == 2 * n
