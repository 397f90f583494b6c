"""Runs train_sccan.py's main in this process once per case, and sends a stop signal to this
process or to its whole process group (this process and its DataLoader workers) at a chosen
point of the run: during its first training step, or at the first batch of a validation.
tests/test_train_e2e.py starts it in a session of its own, so that the group is its own.

    python tests/signal_driver.py CASES_JSON

CASES_JSON: a list of {"name", "signal" (e.g. "SIGTERM"), "target" ("process" or "group"),
"phase" ("training" or "validation"), "validation" (which validation: 1 the first, ...),
"argv" (train_sccan.py's)}. Prints one JSON line per case: name, status (the exit status),
err (stderr), predictions_after_signal (validation batches run after it)."""
import contextlib
import io
import json
import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train_sccan  # noqa: E402
from util.cli import run_main  # noqa: E402
from util.training import FAILURES  # noqa: E402
from util.training import trainer as trainer_module  # noqa: E402
from util.training import validation as validation_module  # noqa: E402


class Case:
    def __init__(self, spec):
        self.spec = spec
        self.sent = False
        self.predictions_after = 0
        self.validations = 0

    def send(self):
        sig = signal.Signals[self.spec['signal']]
        if self.spec['target'] == 'group':
            os.killpg(os.getpgid(0), sig)
        else:
            os.kill(os.getpid(), sig)
        self.sent = True


def hooked(case):
    """The step and the validation predictor of the trainer, sending the case's signal."""
    forward_backward, make_predictor = trainer_module.forward_backward, validation_module.make_predictor

    def step(*args):
        if case.spec['phase'] == 'training' and not case.sent:
            case.send()
        return forward_backward(*args)

    def predictor(*args):
        predict = make_predictor(*args)

        def counted(batch):
            if case.sent:
                case.predictions_after += 1
            elif case.spec['phase'] == 'validation' and case.validations == case.spec['validation']:
                case.send()
            return predict(batch)
        counted.replay = predict.replay
        return counted

    run_episodes = validation_module.run_episodes

    def validation_run(*args, **kwargs):
        case.validations += 1
        return run_episodes(*args, **kwargs)
    return {(trainer_module, 'forward_backward'): step,
            (validation_module, 'make_predictor'): predictor,
            (validation_module, 'run_episodes'): validation_run}


def run(spec):
    case = Case(spec)
    patches = hooked(case)
    saved = {key: getattr(*key) for key in patches}
    err = io.StringIO()
    try:
        for (module, name), value in patches.items():
            setattr(module, name, value)
        with contextlib.redirect_stderr(err):
            try:
                status = run_main(lambda: train_sccan.main(spec['argv']), *FAILURES)
            except SystemExit as e:
                status = e.code
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)
    return {'name': spec['name'], 'status': status, 'err': err.getvalue(),
            'predictions_after_signal': case.predictions_after}


if __name__ == '__main__':
    for spec in json.loads(sys.argv[1]):
        print(json.dumps(run(spec)), flush=True)
