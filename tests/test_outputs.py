"""util/files/ (checks.py, writer.py, run_lock.py): outputs never inputs, no silent overwrite,
atomic writes, the run lock."""
import errno
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from model.checkpoint import read_checkpoint
from util.files.checks import check_outputs, unique_stems
from util.files.run_lock import FolderInUse, RunLock
from util.files.writer import (check_writable, leftover_temporaries, make_folder, save_checkpoint,
                               write_atomic)


def test_an_output_that_is_an_input_is_refused_even_through_a_link(tmp_path):
    source = tmp_path / 'dog_mask.png'
    source.write_bytes(b'user data')
    link = tmp_path / 'link.png'
    link.symlink_to(source)
    for output in (source, link, tmp_path / 'sub' / '..' / 'dog_mask.png'):
        with pytest.raises(ValueError, match=f'would overwrite the input {source}'):
            check_outputs([str(output)], [str(source)], overwrite=True)
    assert source.read_bytes() == b'user data'


def test_existing_outputs_need_overwrite_and_outputs_must_differ(tmp_path):
    existing = tmp_path / 'x_mask.png'
    existing.write_bytes(b'old')
    with pytest.raises(FileExistsError, match='x_mask.png exists already; pass --overwrite'):
        check_outputs([str(existing)])
    check_outputs([str(existing)], overwrite=True)
    with pytest.raises(ValueError, match='two outputs of this run would both be written'):
        check_outputs([str(tmp_path / 'a'), str(tmp_path / '.' / 'a')])


@pytest.mark.parametrize('paths, names', [
    (['a/x.jpg', 'b/x.png', 'c/x.jpg'], ['x', 'x_1', 'x_2']),
    # a file whose own name is x_1 keeps it: the second x is not given it
    (['q.jpg', 'sub/q.jpg', 'q_1.jpg'], ['q', 'q_2', 'q_1']),
    (['q_1.jpg', 'q.jpg', 'sub/q.jpg'], ['q_1', 'q', 'q_2']),
])
def test_outputs_named_after_inputs_never_share_or_take_another_files_name(paths, names):
    assert unique_stems(paths) == names


def test_write_atomic_and_folders(tmp_path):
    path = tmp_path / 'deep' / 'report.json'
    write_atomic(str(path), '{"a": 1}')
    write_atomic(str(path), b'{"a": 2}')
    assert path.read_text() == '{"a": 2}' and os.listdir(path.parent) == ['report.json']
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~current_umask()
    blocker = tmp_path / 'file'
    blocker.write_text('')
    with pytest.raises(NotADirectoryError, match=f'output folder {blocker} exists and is not a '
                                                 'folder'):
        make_folder(str(blocker), 'output folder')
    with pytest.raises(OSError, match=f'cannot write {blocker}/r.json'):
        check_writable(str(blocker / 'r.json'))


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def dead_pid():
    done = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True)
    return int(done.stdout)


def write_lock(path, **record):
    path.write_text(json.dumps({'host': socket.gethostname(), 'started': 'then',
                                'command': 'train_sccan.py', **record}))


def test_a_live_holder_keeps_the_lock_and_is_named(tmp_path):
    path = tmp_path / 'train.lock'
    first = RunLock(str(path))
    assert first.acquire() is None
    with pytest.raises(FolderInUse, match=rf'in use by another run: process {os.getpid()} on '
                                          rf'host {socket.gethostname()}'):
        RunLock(str(path)).acquire()
    first.release()
    assert not path.exists()


def test_another_hosts_lock_is_never_taken_over(tmp_path):
    path = tmp_path / 'train.lock'
    write_lock(path, pid=dead_pid(), host='elsewhere')
    with pytest.raises(FolderInUse, match='on host elsewhere'):
        RunLock(str(path)).acquire()


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    path = tmp_path / 'train.lock'
    pid = dead_pid()
    write_lock(path, pid=pid)
    lock = RunLock(str(path))
    assert lock.acquire()['pid'] == pid
    assert json.loads(path.read_text())['pid'] == os.getpid()
    assert os.listdir(tmp_path) == ['train.lock']
    lock.release()


def test_atomic_save_leaves_no_temporary_and_keeps_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / 'c.pth')
    save_checkpoint({'epoch': 1, 'state_dict': {'w': torch.ones(2)}}, path)
    with pytest.raises(Exception):
        save_checkpoint({'epoch': 2, 'bad': lambda: 0}, path)     # lambdas do not pickle
    assert os.listdir(tmp_path) == ['c.pth']
    assert read_checkpoint(path)['epoch'] == 1


def torch_save_on_a_full_disk(obj, f):
    """What torch.save does when the disk fills: the file's write fails with ENOSPC and torch
    raises a RuntimeError while handling it."""
    try:
        raise OSError(errno.ENOSPC, 'No space left on device')
    except OSError:
        raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598')


@pytest.mark.parametrize('where', ['torch.save', 'os.fsync'])
def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, where):
    path = str(tmp_path / 'train_latest.pth')
    save_checkpoint({'epoch': 1, 'state_dict': {'w': torch.ones(2)}}, path)
    before = open(path, 'rb').read()
    if where == 'torch.save':
        monkeypatch.setattr(torch, 'save', torch_save_on_a_full_disk)
    else:
        def fsync(fd):
            raise OSError(errno.ENOSPC, 'No space left on device')
        monkeypatch.setattr(os, 'fsync', fsync)
    with pytest.raises(OSError) as raised:
        save_checkpoint({'epoch': 2, 'state_dict': {'w': torch.zeros(2)}}, path)
    assert str(raised.value) == (f'cannot write {path}: no space left on device; the previous '
                                 'file is unchanged')
    assert os.listdir(tmp_path) == ['train_latest.pth'] and open(path, 'rb').read() == before


def test_leftover_temporaries_are_those_of_the_named_files(tmp_path):
    names = ['.train_latest.pth.ab_c1234.tmp', '.train_epoch_3_0.5.pth.zz9zz9zz.tmp',
             '.train5_latest.pth.ab_c1234.tmp', '.train_latest_test.json.ab_c1234.tmp',
             '.train_latest.pth.tmp', 'train_latest.pth', '.other.pth.ab_c1234.tmp']
    for name in names:
        (tmp_path / name).write_bytes(b'')
    assert leftover_temporaries(str(tmp_path), 'train_', '.pth') == [str(tmp_path / n) for n in
                                                                      sorted(names[:2])]
    assert leftover_temporaries(str(tmp_path / 'none'), 'train_', '.pth') == []


def test_write_atomic_syncs_the_file_and_its_folder_unless_told_not_to(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, 'fsync', lambda fd: synced.append(os.fstat(fd).st_mode) or real_fsync(fd))
    path = tmp_path / 'c.bin'
    write_atomic(str(path), lambda f: f.write(b'written by a function'))
    assert path.read_bytes() == b'written by a function'
    assert [os.path.stat.S_ISDIR(mode) for mode in synced] == [False, True]    # file, then folder
    write_atomic(str(path), b'label', sync=False)
    assert len(synced) == 2 and path.read_bytes() == b'label'


def test_a_lock_that_cannot_be_written_is_not_left_behind_to_block_the_next_run(tmp_path, monkeypatch):
    path = tmp_path / 'train.lock'

    def full_disk(record, f):
        raise OSError(errno.ENOSPC, 'No space left on device')
    with monkeypatch.context() as patch:
        patch.setattr(json, 'dump', full_disk)
        with pytest.raises(OSError, match=f'^cannot write {path}: no space left on device$'):
            RunLock(str(path)).acquire()
    assert not path.exists()
    assert RunLock(str(path)).acquire() is None


def test_an_empty_lock_is_taken_over_once_its_writer_has_had_a_minute(tmp_path):
    path = tmp_path / 'train.lock'
    path.write_text('')                       # left by an older version on a full disk
    with pytest.raises(FolderInUse, match='a process that did not record itself'):
        RunLock(str(path)).acquire()          # its writer may still be writing
    minutes_ago = os.path.getmtime(path) - 120
    os.utime(path, (minutes_ago, minutes_ago))
    lock = RunLock(str(path))
    assert lock.acquire() == {'record': 'unreadable'}
    assert lock.holder()['pid'] == os.getpid()
