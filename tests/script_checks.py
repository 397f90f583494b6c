"""Running a script's command line in the test process, and what it must leave: on failure exit
status 2 and one `error:` line; the user's files unchanged."""
import hashlib
import os

from util.cli import run_main


def run_cli(main, argv, capsys, *failures):
    """(exit status, stdout, stderr) of `main(argv)` run as its script's `__main__` runs it:
    through util.cli.run_main with `failures`."""
    try:
        result = run_main(lambda: main(argv), *failures)
    except SystemExit as e:
        result = e.code
    out, err = capsys.readouterr()
    return (result if isinstance(result, int) else 0), out, err


def assert_one_error(status, err, *needles):
    """Exit status 2 and, last on stderr (below any progress bar), exactly one line
    `error: ...` holding every needle; no traceback."""
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith('error: ')]
    assert status == 2 and errors and errors == lines[-1:] and 'Traceback' not in err, err
    assert all(needle in errors[0] for needle in needles), errors[0]


def files_below(folder):
    """{relative path: SHA-1 of the content} of every file below `folder`, to show that a run
    left them as they were."""
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, 'rb') as f:
                found[os.path.relpath(path, folder)] = hashlib.sha1(f.read()).hexdigest()
    return found
