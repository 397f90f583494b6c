"""util/experiment.py: what a config names besides data (checkpoints, run folders)."""
import pytest

from model.checkpoint import read_checkpoint
from util.experiment import find_checkpoint


def test_a_checkpoint_that_is_a_folder_is_named_with_the_checkpoints_it_holds(tmp_path):
    run = tmp_path / 'snapshot'
    run.mkdir()
    (run / 'train_latest.pth').write_bytes(b'')
    (run / 'train_epoch_3_0.5000.pth').write_bytes(b'')
    (run / 'notes.txt').write_text('')
    with pytest.raises(IsADirectoryError, match=f'checkpoint {run} is a folder, not a checkpoint '
                                                'file; it holds train_epoch_3_0.5000.pth, '
                                                'train_latest.pth$'):
        find_checkpoint(str(run), str(tmp_path / 'elsewhere'))
    (run / 'empty').mkdir()
    with pytest.raises(IsADirectoryError, match='it holds no .pth file'):
        find_checkpoint('empty', str(run))       # a name in the snapshot folder
    assert find_checkpoint('train_latest.pth', str(run)) == str(run / 'train_latest.pth')
    with pytest.raises(IsADirectoryError, match=f'checkpoint {run} is a folder, not a checkpoint '
                                                'file$'):
        read_checkpoint(run)      # predict_sccan.py --weight, the Python API
