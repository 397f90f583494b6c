"""Entry points of the command-line scripts: a known failure ends in one line on stderr and an
exit status, not a traceback."""
import sys

# Config, data and checkpoint problems: the message names the file, key or value.
USAGE_ERRORS = ((ValueError, OSError), 'error', 2)


def run_main(main, *failures):
    """Call `main()`; an exception matching one of `failures` ((types, label, status), checked in
    order, then USAGE_ERRORS) prints `label: message` and exits with that status."""
    try:
        return main()
    except Exception as e:
        for types, label, status in (*failures, USAGE_ERRORS):
            if isinstance(e, types):
                print(f'{label}: {e}', file=sys.stderr)
                sys.exit(status)
        raise
