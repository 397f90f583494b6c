"""Every code block of README.md and docs/*.md runs as written, or says what it needs
(docs/development.md, "Code blocks in the documentation").

A fence's info string says what the block is: `bash` or `python` for code; `text` (output, file
trees, diagrams), `json`, `yaml`, `bibtex` for the rest. Code runs in a temporary copy of the
repository (the current folder), with the shipped model and example at hand: a page's Python
blocks in turn in one process, as a script outside the copy with PYTHONPATH naming it; each bash
block in `bash -e`, `python` being this interpreter. A code block whose first line is
`# needs: <what>` (data sets, downloads, a GPU, minutes of training, a server) is checked, not
run: its syntax, and for each command that runs a script of the repository, that the script
exists and takes the options given (its parse_args) or, for `make`, that the target exists."""
import ast
import glob
import importlib.util
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys

import pytest

from util.config import REPO_ROOT

PAGES = ['README.md'] + sorted(os.path.relpath(p, REPO_ROOT)
                               for p in glob.glob(os.path.join(REPO_ROOT, 'docs', '*.md')))
CODE = ('bash', 'python')
SHOWN = ('text', 'json', 'yaml', 'bibtex')
NEEDS = re.compile(r'^#\s*needs:\s*\S')
FENCE = re.compile(r'^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>.*)$')
# Left out of the copy: version control, environments, data and runs (the blocks that run need none).
NOT_COPIED = shutil.ignore_patterns('.git', '.venv', 'data', 'exp', '__pycache__', '.pytest_cache')
SECONDS = 120


def blocks(page):
    """(line number, info string, text) of every fenced block of a page."""
    with open(os.path.join(REPO_ROOT, page), encoding='utf-8') as f:
        lines = f.read().split('\n')
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(m['fence'])), None)
            assert end is not None, f'{page}:{i + 1}: a fence that is never closed'
            body = [line[len(m['indent']):] for line in lines[i + 1:end]]
            found.append((i + 1, m['info'].strip(), '\n'.join(body) + '\n'))
            i = end
        i += 1
    return found


def marked(text):
    return bool(NEEDS.match(text.lstrip('\n').split('\n', 1)[0]))


def code_blocks(page, run):
    """The code blocks of a page that run (`run`) or are marked (not `run`), by language."""
    return [(line, info, text) for line, info, text in blocks(page) if info in CODE and marked(text) != run]


# ---- the convention ------------------------------------------------------------------------------
def test_every_block_says_what_it_is():
    wrong = [f'{page}:{line} ```{info}' for page in PAGES for line, info, _ in blocks(page)
             if info not in CODE + SHOWN]
    assert not wrong, (f'give each fence one of {CODE + SHOWN} (bash/python: code that runs or '
                       f'starts with "# needs: ..."; text: output, trees): {wrong}')


def test_the_convention_is_documented():
    with open(os.path.join(REPO_ROOT, 'docs', 'development.md'), encoding='utf-8') as f:
        text = f.read()
    assert '# needs: ' in text and 'tests/test_docs.py' in text


# ---- blocks that are not run: checked -----------------------------------------------------------
def commands(text):
    """The commands of a bash block: token lists, continuation lines joined, comments dropped,
    split at && ; || |, environment assignments in front removed."""
    for line in text.replace('\\\n', ' ').split('\n'):
        command = []
        for token in shlex.split(line, comments=True) + [';']:
            if token in ('&&', ';', '||', '|'):
                while command and re.match(r'^[A-Za-z_]\w*=', command[0]):
                    command.pop(0)
                if command:
                    yield command
                command = []
            else:
                command.append(token)


def script_of(command):
    """(repository script, its arguments) a command runs, or None: python[3] X.py ...,
    torchrun ... X.py ..., or X.py / X.sh run directly."""
    program = os.path.basename(command[0])
    if program.startswith('python'):
        return (command[1], command[2:]) if len(command) > 1 and command[1].endswith('.py') else None
    if program == 'torchrun':
        at = next((i for i, token in enumerate(command) if token.endswith('.py')), None)
        return (command[at], command[at + 1:]) if at is not None else None
    if command[0].endswith(('.py', '.sh')):
        return command[0], command[1:]
    return None


def make_targets():
    with open(os.path.join(REPO_ROOT, 'Makefile')) as f:
        return set(re.findall(r'^([\w.-]+):', f.read(), re.MULTILINE))


def check_command(command, where):
    """The problem with a command of a marked block, or None."""
    if command[0] == 'make':
        missing = [t for t in command[1:] if not t.startswith('-') and t not in make_targets()]
        return f'{where}: make {missing}: no such target' if missing else None
    found = script_of(command)
    if found is None or os.path.isabs(found[0]):
        return None                     # not a script of this repository (git, curl, pip, ...)
    script, args = found
    path = os.path.join(REPO_ROOT, script)
    if not os.path.isfile(path):
        return f'{where}: {script} does not exist'
    if not script.endswith('.py'):
        return None
    spec = importlib.util.spec_from_file_location(f'docs_{os.path.basename(script)[:-3]}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, 'parse_args'):
        return None
    try:
        module.parse_args(args)
    except SystemExit as e:
        return f'{where}: {shlex.join(command)}: its options do not parse (exit status {e.code})'
    return None


@pytest.mark.parametrize('page', PAGES)
def test_blocks_that_are_not_run_are_sound(page, capsys):
    problems = []
    for line, info, text in code_blocks(page, run=False):
        where = f'{page}:{line}'
        if info == 'python':
            try:
                ast.parse(text)
            except SyntaxError as e:
                problems.append(f'{where}: {e}')
            continue
        syntax = subprocess.run(['bash', '-n'], input=text, capture_output=True, text=True)
        if syntax.returncode:
            problems.append(f'{where}: {syntax.stderr.strip()}')
            continue
        problems += [p for p in (check_command(c, where) for c in commands(text)) if p]
    capsys.readouterr()             # argparse's complaints, named in the problems
    assert not problems, problems


# ---- blocks that run ----------------------------------------------------------------------------
@pytest.fixture
def repository(tmp_path):
    """A fresh copy of the repository to run blocks in, without its runs and data."""
    copy = tmp_path / 'repository'
    shutil.copytree(REPO_ROOT, copy, ignore=NOT_COPIED, symlinks=True)
    return copy


def test_python_blocks_run_as_written(repository, tmp_path):
    """All pages' Python blocks in one interpreter (one import of torch), each page's in a
    namespace of its own, from a script outside the repository as the docs say to run them."""
    pages = [(page, '\n'.join(text for _, info, text in code_blocks(page, run=True) if info == 'python'))
             for page in PAGES]
    runner = tmp_path / 'blocks.py'
    runner.write_text(f'for page, code in {[p for p in pages if p[1]]!r}:\n'
                      "    print('page', page, flush=True)\n"
                      "    exec(compile(code, page, 'exec'), {'__name__': '__main__'})\n")
    env = dict(os.environ, PYTHONPATH=str(repository), MPLBACKEND='Agg',
               OMP_NUM_THREADS='1')  # as tests compute
    done = subprocess.run([sys.executable, str(runner)], cwd=repository, env=env, capture_output=True,
                          text=True, timeout=SECONDS)
    assert done.returncode == 0, f'{done.stdout}\n{done.stderr}'


def repository_script(command):
    """(script, arguments) of a `python X.py ...` command running a script of the repository."""
    if os.path.basename(command[0]) in ('python', 'python3') and len(command) > 1 \
            and command[1].endswith('.py') and not os.path.isabs(command[1]):
        return command[1], command[2:]
    return None


def expanded(arguments):
    """The arguments as bash expands them: a pattern becomes its matches, sorted (itself when
    none)."""
    return [match for a in arguments
            for match in ((sorted(glob.glob(a)) or [a]) if any(c in a for c in '*?[') else [a])]


def run_script(script, arguments, monkeypatch):
    """Run a script of the repository as `python script arguments` would, in this process
    (its modules are loaded already): its exit status."""
    with monkeypatch.context() as m:
        m.setattr(sys, 'argv', [script, *expanded(arguments)])
        m.setattr(sys, 'path', list(sys.path))          # the tools put the repository in front
        try:
            runpy.run_path(script, run_name='__main__')
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else int(e.code is not None)
    return 0


@pytest.mark.parametrize('page', [page for page in PAGES
                                  if any(info == 'bash' for _, info, _ in code_blocks(page, run=True))])
def test_bash_blocks_run_as_written(page, repository, monkeypatch, capfd):
    """Each bash block of a page in turn, in a fresh copy. A block of `python <script>.py ...`
    lines runs them in this process, one after the other, stopping at a failure as `bash -e`
    does (the interpreter and the project's modules are loaded once); any other block runs in
    `bash -e`, `python` being this interpreter."""
    monkeypatch.chdir(repository)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH'],
               PYTHONPATH=str(repository), MPLBACKEND='Agg')
    for line, info, text in code_blocks(page, run=True):
        if info != 'bash':
            continue
        scripts = [repository_script(c) for c in commands(text)]
        if all(scripts):
            status = next((s for s in (run_script(*found, monkeypatch) for found in scripts) if s), 0)
        else:
            status = subprocess.run(['bash', '-e', '-c', text], env=env, timeout=SECONDS).returncode
        out, err = capfd.readouterr()
        assert status == 0, f'{page}:{line}: exit status {status}\n{out}\n{err}'


def test_the_checks_find_what_they_forbid():
    """Each check of a marked block finds a breach written for the purpose."""
    assert 'its options do not parse' in check_command(['python', 'test_sccan.py', '--no-such-option'], 'x')
    assert 'does not exist' in check_command(['python', 'tools/no_such_tool.py'], 'x')
    assert 'no such target' in check_command(['make', 'no-such-target'], 'x')
    assert check_command(['python', 'test_sccan.py', '--config', 'c.yaml', '--seeds', '1', '2'], 'x') is None
    assert list(commands('A=1 python x.py --a "b c" && make demo  # note\ncurl -L u | tar x\n')) == [
        ['python', 'x.py', '--a', 'b c'], ['make', 'demo'], ['curl', '-L', 'u'], ['tar', 'x']]
