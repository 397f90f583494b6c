import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# Tests compute with one thread: as the processes tests start do (the same float sums), and as
# fast for the small models of the tests, which a second thread's synchronisation slows down many
# times on a machine that other work shares. Tests marked paper_size (the paper's network at its
# size) use every core.
# Under pytest-xdist (make test: -n auto) each worker gets its share of the cores.
ALL_CORES = max(1, torch.get_num_threads() // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 1)))
torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """Tests marked paper_size, the longest, first: pytest-xdist's work stealing hands the first
    tests to one worker at once and steals from the ends of queues, so they neither start last
    (the suite would wait for them alone) nor get split from their module's shared runs."""
    items.sort(key=lambda item: item.get_closest_marker('paper_size') is None)


@pytest.fixture(autouse=True)
def one_thread(request):
    """One thread, or every core for a test marked paper_size."""
    if request.node.get_closest_marker('paper_size'):
        torch.set_num_threads(ALL_CORES)
    yield
    torch.set_num_threads(1)


def pytest_runtest_logreport(report):
    """With SCCAN_TEST_LOG=FILE (tools/dev/gpu_check.py), a JSON line per test as it ends: outcome,
    seconds, the figures it recorded (record_property) and why it failed or was skipped. Written
    as the run goes, so that a run stopped by a time limit still reports what finished."""
    path = os.environ.get('SCCAN_TEST_LOG')
    if not path or (report.when != 'call' and report.passed):
        return
    why_skipped = report.skipped and isinstance(report.longrepr, tuple)   # (file, line, reason)
    record = {'test': report.nodeid, 'when': report.when, 'outcome': report.outcome,
              'seconds': report.duration, 'properties': dict(report.user_properties),
              'message': (report.longrepr[2] if why_skipped else
                          '' if report.passed else report.longreprtext[-4000:])}
    with open(path, 'a') as f:
        f.write(json.dumps(record, default=str) + '\n')
