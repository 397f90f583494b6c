"""`make test` runs `ruff check` over the tree before the tests (ruff.toml). Two CUDA tests once
failed with NameError for weeks because only a GPU ran them: the linter's rules must catch an
undefined name and an unused import in any folder, whatever runs the code."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_linter_fails_on_an_undefined_name_and_an_unused_import(tmp_path):
    shutil.copy(os.path.join(ROOT, 'ruff.toml'), tmp_path)
    (tmp_path / 'tests').mkdir()
    (tmp_path / 'tests' / 'test_gpu_only.py').write_text(
        'import os\n\n\ndef test_on_a_gpu():\n    train(1)\n')
    out = subprocess.run([sys.executable, '-m', 'ruff', 'check', '--no-cache', '.'], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "F821 Undefined name `train`" in out.stdout
    assert 'F401' in out.stdout and '`os` imported but unused' in out.stdout
