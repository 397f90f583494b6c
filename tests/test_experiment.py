"""util/experiment.py: what a config names besides data (checkpoints, run folders)."""
import re

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
        read_checkpoint(find_checkpoint(str(run), str(tmp_path / 'elsewhere')))
    (run / 'empty').mkdir()
    with pytest.raises(IsADirectoryError, match='it holds no .pth file'):
        read_checkpoint(find_checkpoint('empty', str(run)))       # a name in the snapshot folder
    assert find_checkpoint('train_latest.pth', str(run)) == str(run / 'train_latest.pth')
    with pytest.raises(IsADirectoryError, match=f'checkpoint {run} is a folder, not a checkpoint '
                                                'file; it holds train_epoch_3_0.5000.pth, '
                                                'train_latest.pth$'):
        read_checkpoint(run)      # predict_sccan.py --weight, the Python API: the same message


@pytest.mark.parametrize('path, said', [
    ('exp/pascal/SCCAN/split1/resnet50/snapshot/train_epoch_43_0.6690.pth',
     "its folders suggest pascal split 1, not the config's pascal split 0: its scores would count "
     'base classes as novel'),
    ('exp/pascal/SCCAN/split0/resnet50/snapshot/train_epoch_43_0.6690.pth',
     'its folders suggest pascal split 0$'),
    ('downloads/sccan_best.pth', 'its folders do not name a split either$')])
def test_a_checkpoint_that_records_no_fold_is_said_to_be_unchecked(caplog, path, said):
    """The authors' checkpoints record no data set or fold: testing one on another fold's
    config would score its base classes, so the log says what cannot be checked."""
    import logging
    import torch
    from util.config import default_config
    from util.experiment import check_fits
    # their layout: weights only, ResNet-50 (6 blocks in layer3)
    authors = {'state_dict': {f'backbone.body.layer3.{i}.conv1.weight': torch.zeros(1)
                              for i in range(6)}}
    with caplog.at_level(logging.WARNING, logger='sccan'):
        check_fits(default_config(), authors, path)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith(f"{path} records no data set or fold (the authors' format): whether "
                              'its base classes are the novel ones of pascal split 0 cannot be '
                              'checked; ')
    assert re.search(said, message), message
