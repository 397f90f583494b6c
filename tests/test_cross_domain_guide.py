"""docs/cross_domain.md as written: the commands of its tiny-tree section run (in a folder of the
test's own for data/cross_domain_tiny, with a tiny model for the shipped one), and what it says
of PATNet's seeds is what their test.py does."""
import importlib
import json
import os
import re
import shlex

from model import build_sccan
from model.checkpoint import weights_checkpoint
from util.config import REPO_ROOT, load_config
from util.files.writer import save_checkpoint

GUIDE = os.path.join(REPO_ROOT, 'docs', 'cross_domain.md')
SHIPPED = 'examples/sccan_synthetic_tiny.pth'


def guide():
    with open(GUIDE) as f:
        return f.read()


def tiny_tree_commands():
    """The lines of the bash block of the section 'Try the commands on tiny trees'."""
    section = guide().split('## Try the commands on tiny trees', 1)[1].split('\n## ', 1)[0]
    block = re.search(r'```bash\n(.*?)```', section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def script_main(path):
    """The main() of a script of the repository (tools/x.py, test_sccan.py)."""
    return importlib.import_module(os.path.splitext(path)[0].replace('/', '.')).main


def test_the_tiny_tree_commands_run_as_written(tmp_path, monkeypatch, capsys):
    commands = tiny_tree_commands()
    assert len(commands) == 4 and all(c.startswith('python ') for c in commands)
    model = str(tmp_path / 'tiny.pth')
    save_checkpoint(weights_checkpoint(build_sccan('tiny'), shot=1), model)
    monkeypatch.chdir(REPO_ROOT)                     # where the guide's paths start
    for command in commands:
        words = shlex.split(command.replace('data/cross_domain_tiny', str(tmp_path / 'trees'))
                            .replace(SHIPPED, model))
        status = script_main(words[1])(words[2:])
        assert not isinstance(status, int) or status == 0, command     # (a tool may return data)
    out = capsys.readouterr().out
    assert '0 missing, 0 name, 0 few, 0 unreadable, 0 size, 0 values' in out
    for report in ('fss', 'deepglobe'):
        with open(tmp_path / 'trees' / f'{report}.json') as f:
            assert json.load(f)['episodes'] == 6, report


def test_what_it_says_of_patnets_seeds():
    """PATNet's test.py calls utils.fix_randseed(0) in its test loop and has no seed option:
    one run, seed 0 (slei109/PATNet, test.py). The guide said 'the mean over five seeds'."""
    text = guide()
    assert 'five seeds' not in text and 'fix_randseed(seed)' not in text
    assert "PATNet's `test.py` tests once, with its seed fixed at 0 (`utils.fix_randseed(0)`" in text
    for name in os.listdir(os.path.join(REPO_ROOT, 'config', 'cross_domain')):
        # the 5-shot configs take it from their 1-shot bases
        assert load_config(os.path.join(REPO_ROOT, 'config', 'cross_domain', name)).manual_seed == 0, name
