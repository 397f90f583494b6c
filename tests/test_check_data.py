"""tools/check_data.py finds each kind of bad file."""
import os

import cv2
import numpy as np
import pytest

from helpers import assert_one_error, make_pascal, run_cli

from tools import check_data  # noqa: E402
from util.lists import read_list


def read_report(path):
    with open(path) as f:
        return [line.rstrip('\n').split('\t') for line in f]


@pytest.fixture
def broken(tmp_path):
    root, train, val = make_pascal(tmp_path / 'data', n_train=20, n_val=20)
    with open(train) as f:
        pairs = [line.split() for line in f]

    def path(k, which):
        return os.path.join(root, pairs[k][which])

    os.remove(path(0, 0))                                            # missing image
    os.remove(path(1, 1))                                            # missing label
    with open(path(2, 0), 'wb') as f:
        f.write(b'\xff\xd8 not really a jpeg')                       # unreadable image
    cv2.imwrite(path(3, 1), np.zeros((50, 60, 3), np.uint8))        # colour label: unreadable
    cv2.imwrite(path(4, 1), np.zeros((50, 60), np.uint8))           # size mismatch
    label = cv2.imread(path(5, 1), cv2.IMREAD_UNCHANGED)
    label[0, 0] = 33
    cv2.imwrite(path(5, 1), label)                                  # value outside 0..20, 255
    expected = [['missing', path(0, 0)], ['missing', path(1, 1)], ['unreadable', path(2, 0)],
                ['unreadable', path(3, 1)], ['size', path(4, 1)], ['values', path(5, 1)]]
    return root, train, val, expected, str(tmp_path / 'report.txt')


def test_finds_each_kind(broken, capsys):
    root, train, val, expected, report = broken
    status = check_data.main(['--data-set', 'pascal', '--data-root', root, '--list', train,
                              '--list', val, '--out', report, '--workers', '2'])
    assert status == 1
    found = read_report(report)
    assert [row[:2] for row in found] == expected
    assert '33' in found[-1][2] and '50x60' in found[4][2]
    out = capsys.readouterr().out
    assert '40 image/label pairs checked in 2 list(s): 2 missing, 2 unreadable, 1 size, ' \
           '1 values' in out


def test_without_out_nothing_is_written_and_every_problem_is_printed_up_to_20(broken, capsys,
                                                                              monkeypatch):
    """The report once went into the repository's lists/ by default."""
    root, train, val, expected, _ = broken
    written = []
    monkeypatch.setattr(check_data, 'write_atomic', lambda *args: written.append(args))
    assert check_data.main(['--data-set', 'pascal', '--data-root', root, '--list', train]) == 1
    out = capsys.readouterr().out
    assert written == [] and 'report:' not in out
    assert all(f'  {kind}: {path}' in out for kind, path in expected)
    many = [('missing', f'{root}/{k}.png', 'detail') for k in range(23)]
    monkeypatch.setattr(check_data, 'check_list', lambda *args: many)
    check_data.main(['--data-set', 'pascal', '--data-root', root, '--list', train])
    assert '  ... 3 more: --out FILE lists every one' in capsys.readouterr().out and written == []


def test_a_folder_a_link_loop_and_a_comment_are_told_apart(tmp_path, capsys):
    """A listed path that is a folder or a loop of symbolic links is unreadable, not 'file not
    found'; a link to nothing is missing and says so; a `# comment` line is no pair."""
    root, train, _ = make_pascal(tmp_path / 'data', n_train=20, n_val=20)
    with open(train) as f:
        pairs = [line.split() for line in f]
    folder, loop, dangling = (os.path.join(root, pairs[k][0]) for k in range(3))
    os.remove(folder)
    os.mkdir(folder)
    os.remove(loop)
    os.symlink(os.path.basename(loop), loop)
    os.remove(dangling)
    os.symlink('gone.jpg', dangling)
    with open(train, 'a') as f:
        f.write('# a note about the list\n')
    report = str(tmp_path / 'report.txt')
    assert check_data.main(['--data-set', 'pascal', '--data-root', root, '--list', train,
                            '--out', report, '--workers', '2']) == 1
    assert read_report(report) == [
        ['unreadable', folder, 'is a folder, not a file'],
        ['unreadable', loop, 'is a symbolic link in a loop (it leads back to itself)'],
        ['missing', dangling, 'is a symbolic link to gone.jpg, which does not exist']]
    assert '20 image/label pairs checked' in capsys.readouterr().out


def test_clean_data_passes(tmp_path, capsys):
    root, train, val = make_pascal(tmp_path, n_train=20, n_val=20)
    report = str(tmp_path / 'report.txt')
    assert check_data.main(['--data-set', 'pascal', '--data-root', root, '--list', val,
                            '--out', report]) == 0
    assert read_report(report) == []
    assert '0 missing, 0 unreadable, 0 size, 0 values' in capsys.readouterr().out


def test_a_data_root_one_folder_off_says_so(tmp_path, capsys):
    root, train, val = make_pascal(tmp_path, n_train=20, n_val=20)
    deeper = os.path.join(root, 'JPEGImages')
    assert check_data.main(['--data-set', 'pascal', '--data-root', deeper, '--list', val]) == 1
    out = capsys.readouterr().out
    first = read_list(val)[0][0]
    assert (f"  note: no listed file is below {deeper}: is it the folder the lists' paths start "
            f'from (e.g. {first})?') in out
    assert check_data.main(['--data-set', 'pascal', '--data-root', root, '--list', val]) == 0
    assert 'note: no listed file' not in capsys.readouterr().out


def test_from_config(broken, tmp_path):
    pytest.importorskip('util.config', reason='config loading belongs to util/config.py')
    root, train, val, expected, report = broken
    config = tmp_path / 'c.yaml'
    config.write_text(f'Data:\n  data_root: {root}\n  train_list: {train}\n  val_list: {val}\n'
                      f'Train:\n  data_set: pascal\n')
    assert check_data.main(['--config', str(config), '--out', report]) == 1
    assert [row[:2] for row in read_report(report)] == expected


def test_needs_a_source():
    with pytest.raises(ValueError, match='give --config'):
        check_data.main(['--data-set', 'pascal'])


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        check_data.parse_args(['--help'])
    assert exit_info.value.code == 0 and '--config' in capsys.readouterr().out


def test_truncated_jpeg_and_png_are_found(tmp_path, capsys):
    root, train, val = make_pascal(tmp_path / 'data', n_train=20, n_val=20)
    with open(val) as f:
        image, label = (os.path.join(root, p) for p in f.readline().split())
    for path in (image, label):
        with open(path, 'rb') as f:
            data = f.read()
        with open(path, 'wb') as f:
            f.write(data[:len(data) // 3])
    report = str(tmp_path / 'report.txt')
    assert check_data.main(['--data-set', 'pascal', '--data-root', root, '--list', val,
                            '--out', report]) == 1
    found = read_report(report)
    assert [row[:2] for row in found] == [['unreadable', image], ['unreadable', label]]
    assert 'truncated or corrupt JPEG' in found[0][2] and 'truncated or corrupt PNG' in found[1][2]


def test_a_malformed_list_line_is_one_error_line(tmp_path, capsys):
    root, train, _ = make_pascal(tmp_path / 'data', n_train=20, n_val=20)
    with open(train, 'a') as f:
        f.write('JPEGImages/only_one_field.jpg\n')
    status, _, err = run_cli(check_data.main, ['--data-set', 'pascal', '--data-root', root,
                                               '--list', train, '--out', str(tmp_path / 'r')],
                             capsys)
    assert_one_error(status, err, f'error: {train}:21: expected "image_path label_path"')
