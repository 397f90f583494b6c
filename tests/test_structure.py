"""Where things live, as far as a test can state it.

The import graph points one way: model/ is the model alone (it imports nothing else of the
project, so it can be lifted into any codebase); util/ builds on model/; the scripts and tools/
build on both, and no tool imports a script (the library does the work, a script only parses its
command line); the user's tools (tools/) never import the developers' (tools/dev/: golden files,
measurement), which may build on them; nothing imports tests/, and no test module imports another
(shared helpers live in tests/helpers.py). The scripts are thin. Outputs are written by the one
atomic writer (util.files.writer.write_atomic), and the input-size rule of SCCAN is written once
(model.sccan). The library's public API (model/ and util/) carries type hints.
"""
import ast
import glob
import os
import re

from util.config import REPO_ROOT

SCRIPTS = {'train_sccan', 'test_sccan', 'predict_sccan'}
PACKAGES = {'model', 'util', 'tools', 'tests'} | SCRIPTS
MAX_SCRIPT_LINES = 120
WRITER = os.path.join('util', 'files', 'writer.py')   # the one module that opens files for writing
WRITE_MODES = set('wax+')


def python_files(folder):
    """The Python files of a folder and its subfolders (of the top level only for '')."""
    pattern = os.path.join(REPO_ROOT, folder, '**', '*.py') if folder else os.path.join(REPO_ROOT, '*.py')
    return sorted(glob.glob(pattern, recursive=True))


def project_code():
    """The files of the project's code: model/, util/, tools/ and the scripts."""
    return [p for folder in ('model', 'util', 'tools', '') for p in python_files(folder)]


def parse(path):
    with open(path) as f:
        return ast.parse(f.read(), path)


def imported_modules(tree):
    """The module names a file imports anywhere (function bodies included)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def project_imports(path):
    """The top-level project modules a file imports. tests/ puts its own folder on sys.path, so a
    bare `import helpers` there is a sibling: it counts as its folder."""
    siblings = {os.path.splitext(os.path.basename(p))[0]
                for p in glob.glob(os.path.join(os.path.dirname(path), '*.py'))}
    found = set()
    for module in imported_modules(parse(path)):
        top = module.split('.')[0]
        if top in siblings and top not in PACKAGES:
            top = os.path.basename(os.path.dirname(path))
        if top in PACKAGES:
            found.add(top)
    return found


def imported_packages(folder):
    return {os.path.relpath(p, REPO_ROOT): project_imports(p) for p in python_files(folder)}


def test_model_imports_nothing_else_of_the_project():
    for path, packages in imported_packages('model').items():
        assert packages <= {'model'}, f'{path} imports {packages - {"model"}}'


def test_util_builds_only_on_model():
    for path, packages in imported_packages('util').items():
        assert packages <= {'util', 'model'}, f'{path} imports {packages - {"util", "model"}}'


def test_nothing_imports_the_tests():
    for folder in ('model', 'util', 'tools', ''):
        for path, packages in imported_packages(folder).items():
            assert 'tests' not in packages, path


def test_no_tool_imports_a_script():
    for path, packages in imported_packages('tools').items():
        assert not packages & SCRIPTS, f'{path} imports {packages & SCRIPTS}: call the library'


def test_no_test_imports_another_test():
    for path in python_files('tests'):
        tests = {os.path.splitext(os.path.basename(p))[0] for p in python_files('tests')
                 if os.path.basename(p).startswith('test_')}
        imported = {module.split('.')[-1] for module in imported_modules(parse(path))}
        assert not imported & tests, f'{path} imports {imported & tests}: share it in helpers.py'


TOOL_FOLDERS = {'tools': 'tools', 'tools.dev': os.path.join('tools', 'dev')}   # package → folder


def tool_modules():
    """{bare name: module name} of every tool: tools/<name>.py is tools.<name>, tools/dev/<name>.py
    tools.dev.<name>; and each tools subfolder (dev) by its bare name."""
    found = {}
    for package, folder in TOOL_FOLDERS.items():
        for path in glob.glob(os.path.join(REPO_ROOT, folder, '*.py')):
            found[os.path.splitext(os.path.basename(path))[0]] = f'{package}.{os.path.basename(path)[:-3]}'
        if package != 'tools':
            found[package.rsplit('.', 1)[1]] = package
    return found


def tool_import_problems(tree, text, tools):
    """How a file imports a tool other than as its module tools.<name> or tools.dev.<name>
    (`from tools import x`, `from tools.dev import x`): a bare `import golden` with tools/ (or
    tools/dev/) on sys.path, which loads a second copy; a module of tools that is not a tool's
    (a tool named in the wrong folder); a bare name given to importlib.import_module."""
    names = []                                  # (module name, how it is written)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, f'import {alias.name}') for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += ([(f'{node.module}.{alias.name}', f'from {node.module} import {alias.name}')
                       for alias in node.names] if node.module in TOOL_FOLDERS
                      else [(node.module, f'from {node.module} import ...')])
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == 'import_module' and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.append((node.args[0].value, f'import_module({node.args[0].value!r})'))
    problems = []
    for name, written in names:
        top = name.split('.')[0]
        if top in tools:
            problems.append(f'{written}: import it as {tools[top]}')
        elif top == 'tools' and name not in TOOL_FOLDERS and name not in tools.values():
            where = tools.get(name.rsplit('.', 1)[-1])
            problems.append(f'{written}: no such tool' + (f' (it is {where})' if where else ''))
    if re.search(r"sys\.path.*['\"](tools|dev)['\"]", text):
        problems.append('puts tools/ on sys.path')
    return problems


def test_tools_are_imported_one_way():
    """A tool is the module tools.<name> (tools.dev.<name> for the developers' tools) wherever it
    is imported (tools and tests alike), never a bare `import golden` with tools/ on sys.path:
    that loads a second copy of the module."""
    tools = tool_modules()
    for folder in ('tools', 'tests'):
        for path in python_files(folder):
            with open(path) as f:
                text = f.read()
            problems = tool_import_problems(ast.parse(text, path), text, tools)
            assert not problems, f'{path}: {problems}'


def test_the_users_tools_do_not_import_the_developers():
    """tools/ works without tools/dev/: the developers' tools build on the user's, not the reverse."""
    for path in glob.glob(os.path.join(REPO_ROOT, 'tools', '*.py')):
        dev = [m for m in imported_modules(parse(path)) if m == 'tools.dev' or m.startswith('tools.dev.')]
        assert not dev, f'{path} imports {dev}'


def test_the_scripts_are_thin():
    for name in sorted(SCRIPTS):
        with open(os.path.join(REPO_ROOT, name + '.py')) as f:
            lines = len(f.readlines())
        assert lines <= MAX_SCRIPT_LINES, f'{name}.py has {lines} lines: move the work to util/'


def write_calls(tree):
    """(line, what) of every call that opens a file for writing: open / os.fdopen / io.open
    with a writing mode, and pathlib's write_text / write_bytes."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ''
        if name in ('write_text', 'write_bytes'):
            yield node.lineno, name
        elif name in ('open', 'fdopen'):
            mode = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == 'mode'), None)
            if isinstance(mode, ast.Constant) and WRITE_MODES & set(str(mode.value)):
                yield node.lineno, f'{name}(..., {mode.value!r})'


def test_outputs_are_written_by_the_one_writer_only():
    found = [f'{os.path.relpath(path, REPO_ROOT)}:{line} {what}' for path in project_code()
             if os.path.relpath(path, REPO_ROOT) != WRITER
             for line, what in write_calls(parse(path))]
    assert not found, f'write through util.files.writer.write_atomic instead: {found}'


def is_input_size_rule(node):
    """`(x - 1) % n`: the rule that SCCAN's inputs have (size - 1) % 8 == 0."""
    return (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod)
            and isinstance(node.left, ast.BinOp) and isinstance(node.left.op, ast.Sub)
            and isinstance(node.left.right, ast.Constant) and node.left.right.value == 1)


def test_the_input_size_rule_is_written_once_in_the_model():
    found = [f'{os.path.relpath(path, REPO_ROOT)}:{node.lineno}' for path in project_code()
             for node in ast.walk(parse(path)) if is_input_size_rule(node)]
    assert len(found) == 1 and found[0].startswith(os.path.join('model', 'sccan.py')), found


def public_functions(tree):
    """(node, name) of the public functions of a module: module-level ones and the methods of
    module-level classes whose names do not start with '_', and a public class's __init__ (its
    parameters are the constructor's). Nested functions do not count."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith('_'):
            yield node, node.name
        elif isinstance(node, ast.ClassDef) and not node.name.startswith('_'):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                        not item.name.startswith('_') or item.name == '__init__'):
                    yield item, f'{node.name}.{item.name}'


def missing_hints(function):
    """The parameters of a function (self/cls aside) without a type hint, and 'return' where
    its return type is not stated (an __init__ needs none)."""
    args = function.args
    params = args.posonlyargs + args.args + args.kwonlyargs
    named = [a for i, a in enumerate(params) if not (i == 0 and a.arg in ('self', 'cls'))]
    gaps = [a.arg for a in named if a.annotation is None]
    gaps += [f'*{a.arg}' for a in (args.vararg, args.kwarg) if a is not None and a.annotation is None]
    return gaps + (['return'] if function.returns is None and function.name != '__init__' else [])


def is_private_module(path):
    name = os.path.basename(path)
    return name.startswith('_') and name != '__init__.py'


def test_the_public_api_has_type_hints():
    unhinted = [f'{os.path.relpath(path, REPO_ROOT)}:{node.lineno} {name}: {", ".join(gaps)}'
                for folder in ('model', 'util') for path in python_files(folder)
                if not is_private_module(path)
                for node, name in public_functions(parse(path)) if (gaps := missing_hints(node))]
    assert unhinted == []


def test_the_rules_above_catch_what_they_forbid():
    """Each rule finds a breach of it written for the purpose (a rule that finds nothing in any
    code would pass as well)."""
    breach = ast.parse("import test_model\nopen(path, 'w')\nos.fdopen(fd, mode='ab')\n"
                       "Path('r').write_text('x')\nok = (h - 1) % 8\nopen(path)\n")
    assert [what for _, what in write_calls(breach)] == ["open(..., 'w')", "fdopen(..., 'ab')",
                                                          'write_text']
    assert sum(map(is_input_size_rule, ast.walk(breach))) == 1
    assert list(imported_modules(breach)) == ['test_model']
    hints = ast.parse("def f(a: int, *rest, b) -> None: ...\nclass C:\n    def __init__(self, x): ...\n"
                      "    def g(self) -> int:\n        def inner(y): ...\n    def _h(self, z): ...\n"
                      "def _private(q): ...\n")
    assert [(name, missing_hints(node)) for node, name in public_functions(hints)] == [
        ('f', ['b', '*rest']), ('C.__init__', ['x']), ('C.g', [])]
    tools = {'demo': 'tools.demo', 'golden': 'tools.dev.golden', 'dev': 'tools.dev'}
    allowed = ("from tools import demo\nfrom tools.dev import golden\nfrom tools.demo import x\n"
               "import tools.dev.golden\nimportlib.import_module('tools.dev.golden')\n")
    assert tool_import_problems(ast.parse(allowed), allowed, tools) == []
    dev_folder = "os.path.join(REPO, 'tools', 'dev')"     # apart: this line is no breach itself
    breaches = ["import golden", "from dev import golden", "from tools import golden",
                "from tools.dev import demo", "import tools.golden", "importlib.import_module('golden')",
                f"sys.path.insert(0, {dev_folder})"]
    assert [len(tool_import_problems(ast.parse(b), b, tools)) for b in breaches] == [1] * len(breaches)
