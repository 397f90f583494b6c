"""Where things live: the import graph between the project's packages points one way.

model/ is the model alone (it imports nothing else of the project, so it can be lifted into any
codebase); util/ builds on model/; the scripts and tools/ build on both; nothing imports tests/,
and tools/ import a top-level script only to run its main().
"""
import ast
import glob
import os

from util.config import REPO_ROOT

SCRIPTS = {'train_sccan', 'test_sccan', 'predict_sccan'}
PACKAGES = {'model', 'util', 'tools', 'tests'} | SCRIPTS


def python_files(folder):
    """The Python files of a folder and its subfolders (of the top level only for '')."""
    pattern = os.path.join(REPO_ROOT, folder, '**', '*.py') if folder else os.path.join(REPO_ROOT, '*.py')
    return sorted(glob.glob(pattern, recursive=True))


def project_imports(path):
    """{top-level project module: [names used on it]} imported anywhere in a file (function
    bodies included). tools/ and tests/ put their own folder on sys.path, so a bare `import demo`
    there is a sibling."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    siblings = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(os.path.dirname(path), '*.py'))}
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [(alias.name, alias.asname or alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [(node.module, alias.asname or alias.name) for alias in node.names]
        else:
            continue
        for module, bound in names:
            top = module.split('.')[0]
            if top in siblings and top not in PACKAGES:
                top = os.path.basename(os.path.dirname(path))
            if top in PACKAGES:
                found.setdefault(top, []).append(bound)
    return found, tree


def imported_packages(folder):
    return {os.path.relpath(p, REPO_ROOT): set(project_imports(p)[0]) for p in python_files(folder)}


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


def test_tools_import_a_script_only_to_run_it():
    for path in python_files('tools'):
        imports, tree = project_imports(path)
        taken = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 and node.module in SCRIPTS for alias in node.names}
        assert taken <= {'main'}, f'{path} takes {taken - {"main"}} from a script'
        scripts = {name for top, names in imports.items() if top in SCRIPTS for name in names}
        used = {node.attr for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in scripts}
        assert used <= {'main'}, f'{path} uses {used - {"main"}} of {scripts}'
