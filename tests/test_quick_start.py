"""The README's quick start says what it does: its "two commands" are two, and the Makefile has
each command it names."""
import os
import re

from util.config import REPO_ROOT


def read(name):
    with open(os.path.join(REPO_ROOT, name)) as f:
        return f.read()


def test_the_two_commands_are_two_make_targets():
    section = read('README.md').split('## Quick start: two commands', 1)[1].split('\n## ', 1)[0]
    block = re.search(r'```bash\n(.*?)```', section, re.S).group(1)
    commands = [line.split('#')[0].strip() for line in block.splitlines()
                if line.split('#')[0].strip()]
    assert commands == ['make demo', 'make test']
    targets = re.findall(r'^([\w-]+):', read('Makefile'), re.M)
    named = re.findall(r'`(make [\w-]+)`', section) + commands
    assert all(command.split()[1] in targets for command in named), named
