"""util/catalogue.py is the one table of data sets: what reads it agrees with it, and what it
says of the files is true."""
import glob
import os

import yaml

from util.catalogue import CATALOGUE, cross_domain_benchmarks, with_episodes
from util.config import DEFAULT_TEST_NUM, REPO_ROOT, SCHEMA, load_config
from util.datasets import DATA_SETS
from util.datasets.cross_domain import CLASS_CYCLE, QUERY_ORDER, TEST_BENCHMARKS
from util.folds import NUM_CLASSES


def test_every_reader_knows_the_same_data_sets():
    names = tuple(CATALOGUE)
    assert SCHEMA['data_set'].choices == names and tuple(DATA_SETS) == names
    assert DEFAULT_TEST_NUM == {name: d.test_episodes for name, d in CATALOGUE.items()}
    assert NUM_CLASSES == {'pascal': 20, 'coco': 80}
    assert set(CLASS_CYCLE) | set(QUERY_ORDER) | set(with_episodes('folds')) == set(names)
    assert TEST_BENCHMARKS == cross_domain_benchmarks() == ('fss', 'deepglobe', 'isic', 'lung')


def test_the_protocols_episode_counts():
    """PATNet's test.py: FSS-1000's 240 test classes × 10 images each a query once; the others
    `num=600`. The authors' SCCAN: 1,000 PASCAL and 4,000 COCO episodes."""
    assert CATALOGUE['fss'].test_episodes == 240 * 10
    assert all(CATALOGUE[name].test_episodes == 600 for name in CLASS_CYCLE)
    assert (CATALOGUE['pascal'].test_episodes, CATALOGUE['coco'].test_episodes) == (1000, 4000)


def test_the_preparation_tools_exist_and_the_configs_look_in_the_named_folders():
    for d in CATALOGUE.values():
        assert d.preparation is None or os.path.isfile(os.path.join(REPO_ROOT, d.preparation)), d
    for path in glob.glob(os.path.join(REPO_ROOT, 'config', '*', '*.yaml')):
        with open(path) as f:
            given = yaml.safe_load(f).get('Data', {}).get('data_root')
        cfg = load_config(path)
        folder = CATALOGUE[cfg.data_set].folder
        if given and folder and not cfg.data_root.endswith('synthetic'):
            assert cfg.data_root.endswith(os.sep + folder), (path, cfg.data_root)
