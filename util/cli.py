"""Entry points of the command-line scripts: a known failure ends in one line on stderr and an
exit status, not a traceback; bad arguments are refused by name before anything runs."""
import argparse
import re
import sys
from typing import Callable, NoReturn, Sequence, TypeVar

_T = TypeVar('_T')

# The tools that messages send users to, named in this one place.
TOOLS = {'check_data': 'tools/check_data.py', 'prepare_pascal': 'tools/prepare_pascal.py',
         'prepare_coco': 'tools/prepare_coco.py', 'make_synthetic': 'tools/make_synthetic.py'}

# Config, data and checkpoint problems: the message names the file, key or value.
USAGE_ERRORS = ((ValueError, OSError), 'error', 2)
INTERRUPTED_STATUS = 130


def run_main(main: Callable[[], _T],
             *failures: tuple[type[Exception] | tuple[type[Exception], ...], str, int]) -> _T:
    """Call `main()`; an exception matching one of `failures` ((types, label, status), checked in
    order, then USAGE_ERRORS) prints `label: message` on one line and exits with that status.
    Ctrl-C (KeyboardInterrupt) prints `interrupted: ...` and exits with 130."""
    try:
        return main()
    except KeyboardInterrupt as e:
        print(f'interrupted: {error_line(e) or "stopped"}', file=sys.stderr)
        sys.exit(INTERRUPTED_STATUS)
    except Exception as e:
        for types, label, status in (*failures, USAGE_ERRORS):
            if isinstance(e, types):
                print(f'{label}: {error_line(e)}', file=sys.stderr)
                sys.exit(status)
        raise


# torch re-raises an error of a DataLoader worker as the same type, with a message made of the
# worker's traceback (see torch/_utils.py, ExceptionWrapper); its last lines are the original.
_WORKER_TRACEBACK = 'Original Traceback (most recent call last):'


def error_line(error: BaseException) -> str:
    """The message of `error` on one line: for an error re-raised from a DataLoader worker the
    worker's own message; several lines (e.g. the keys of a checkpoint that does not fit) are
    joined by '; '."""
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    if _WORKER_TRACEBACK in message:
        name = re.escape(type(error).__name__)
        starts = list(re.finditer(rf'^(?:[\w.]+\.)?{name}: ', message, re.MULTILINE))
        if starts:
            message = message[starts[-1].end():]
    return one_line(message)


def one_line(message: str) -> str:
    """Lines stripped and joined by '; ' (by ' ' after a line ending in ':')."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    joined = lines[0] if lines else ''
    for line in lines[1:]:
        joined += (' ' if joined.endswith(':') else '; ') + line
    return joined


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the scripts' one-line errors (`error: argument --episodes: ...`, status 2)
    and a check that an option taking all the words after it (--opts) comes last."""

    def error(self, message: str) -> NoReturn:
        print(f'error: {message} (see {self.prog} --help)', file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args: Sequence[str] | None = None,
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        args = sys.argv[1:] if args is None else list(args)
        self._check_remainder_is_last(args)
        return super().parse_args(args, namespace)

    def _check_remainder_is_last(self, args):
        greedy = {option for action in self._actions if action.nargs == argparse.REMAINDER
                  for option in action.option_strings}
        start = next((i for i, word in enumerate(args) if word in greedy), None)
        if start is None:
            return
        swallowed = [word for word in args[start + 1:] if word in self._option_string_actions]
        if swallowed:
            self.error(f'{args[start]} takes every word after it as KEY VALUE pairs, so it took '
                       f'{", ".join(swallowed)} too: put {args[start]} last')


def number(text: str, convert: Callable[[str], _T], accepts: Callable[[_T], bool], expected: str) -> _T:
    """An argparse type's work: `convert(text)` when it reads and `accepts` the value, else the
    error 'expected <expected>, got <text>'."""
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not accepts(value):
        raise argparse.ArgumentTypeError(f'expected {expected}, got {text!r}')
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return number(text, int, lambda v: v >= 1, 'a positive integer')


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return number(text, int, lambda v: v >= 0, 'an integer >= 0')


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return number(text, float, lambda v: 0 < v < float('inf'), 'a positive number')
