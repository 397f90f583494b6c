"""tools/dev/authors_episodes.py: the episodes the authors' own test loader draws, as a manifest.

The tool needs their code (OFFICIAL_SCCAN, a clone of github.com/Sam1224/SCCAN); the tests that
run it are skipped without. The manifest it wrote on the generated tree below is committed
(tests/golden/authors_episodes_pascal_split0_1shot.jsonl), so that what needs only the manifest
runs everywhere. Regenerate it with

    OFFICIAL_SCCAN=... python -c "import sys; sys.path[:0] = ['tests', '.']; import helpers; \\
        helpers.make_pascal('/tmp/authors-tree')"
    OFFICIAL_SCCAN=... python tools/dev/authors_episodes.py --data-root /tmp/authors-tree \\
        --lists build --val-list /tmp/authors-tree/val.txt --episodes 20 \\
        --out tests/golden/authors_episodes_pascal_split0_1shot.jsonl --overwrite
"""
import os

import cv2
import numpy as np
import pytest
import torch

from helpers import assert_one_error, make_pascal, run_cli
from tools.dev import authors_episodes, reference
from util.datasets.pascal_coco import EpisodeDataset
from util.evaluation.manifest import check_fits, read_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOLDEN = os.path.join(ROOT, 'tests', 'golden', 'authors_episodes_pascal_split0_1shot.jsonl')
OFFICIAL = os.environ.get(reference.ENV)
needs_their_code = pytest.mark.skipif(
    not OFFICIAL, reason=f"runs the authors' code: set {reference.ENV} to a clone of "
                         'github.com/Sam1224/SCCAN')


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    """The generated PASCAL tree the golden manifest was drawn on."""
    return make_pascal(tmp_path_factory.mktemp('authors') / 'data')


def run_tool(tree, out, *extra):
    data_root, _, val_list = tree
    return authors_episodes.main(['--data-root', data_root, '--lists', 'build', '--val-list',
                                  val_list, '--out', str(out), *extra])


def identities(manifest):
    return [r.identity() for r in manifest.records]


# ---- with the committed manifest only --------------------------------------------------------
def test_the_golden_manifest_fits_its_tree(tree):
    manifest = read_manifest(GOLDEN)
    h = manifest.header
    assert (h['data_set'], h['split'], h['shot'], h['seeds'], h['episodes']) == ('pascal', 0, 1, [321], 20)
    assert h['config'] == {'path': 'config/pascal/pascal_split0_resnet50.yaml', 'workers': 8,
                           'lists': 'build'}
    check_fits(manifest, 'pascal', 0, 1, [1, 2, 3, 4, 5], tree[0])
    # Their loader does not shuffle: episode e queries image e mod N of their list, which is the
    # order of ours (the val list's, images with a novel class).
    ours = EpisodeDataset('pascal', tree[0], tree[2], 0, 1, 'val',
                          list_cache_dir=os.path.join(os.path.dirname(tree[0]), 'lists'))
    assert [r.episode.query for r in manifest.records] == [e.query for e in ours.plan(321, 20)]
    for r in manifest.records:              # supports of the episode's class, never the query
        assert r.episode.query not in r.episode.supports
        label = cv2.imread(os.path.join(tree[0], r.episode.supports[0][1]), cv2.IMREAD_GRAYSCALE)
        assert (label == r.episode.class_id).sum() >= 2 * 32 * 32


def test_without_their_code_it_says_what_to_set(tree, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(reference.ENV, raising=False)
    argv = ['--data-root', tree[0], '--out', str(tmp_path / 'm.jsonl')]
    status, _, err = run_cli(authors_episodes.main, argv, capsys, (RuntimeError, 'error', 2))
    assert_one_error(status, err, f'{reference.ENV} is not set: git clone https://github.com/Sam1224/SCCAN')
    assert not os.path.exists(tmp_path / 'm.jsonl')


# ---- running their loader --------------------------------------------------------------------
@needs_their_code
def test_the_tool_reproduces_the_golden_manifest(tree, tmp_path):
    run_tool(tree, tmp_path / 'm.jsonl', '--episodes', '20')
    ours, golden = read_manifest(str(tmp_path / 'm.jsonl')), read_manifest(GOLDEN)
    assert identities(ours) == identities(golden)
    assert {k: v for k, v in ours.header.items() if k != 'source'} == {
        k: v for k, v in golden.header.items() if k != 'source'}


@needs_their_code
def test_their_draws_depend_on_the_workers(tree, tmp_path):
    run_tool(tree, tmp_path / 'w0.jsonl', '--episodes', '20', '--workers', '0')
    run_tool(tree, tmp_path / 'w2.jsonl', '--episodes', '20', '--workers', '2')
    w0, w2 = (read_manifest(str(tmp_path / f'{w}.jsonl')) for w in ('w0', 'w2'))
    golden = read_manifest(GOLDEN)                    # their default: 8 workers
    assert len({tuple(identities(m)) for m in (w0, w2, golden)}) == 3
    # the queries are the same (no shuffling), the classes and supports drawn are not
    assert [r.episode.query for r in w0.records] == [r.episode.query for r in golden.records]
    run_tool(tree, tmp_path / 'again.jsonl', '--episodes', '20', '--workers', '2')
    assert identities(read_manifest(str(tmp_path / 'again.jsonl'))) == identities(w2)


@needs_their_code
def test_supports_are_recorded_in_their_stacking_order(tree, tmp_path):
    """Their item's stacked supports (s_x) are the manifest's supports, in that order, read and
    transformed as their SemData reads and transforms them."""
    run_tool(tree, tmp_path / 'm.jsonl', '--episodes', '1', '--shot', '3', '--workers', '0')
    supports = read_manifest(str(tmp_path / 'm.jsonl')).records[0].episode.supports
    theirs = reference.official_modules(OFFICIAL, reference.LOADER_MODULES)
    args = authors_episodes.parse_args(['--data-root', tree[0], '--out', 'unused', '--shot', '3',
                                        '--lists', 'build', '--val-list', tree[2]])
    _, cfg = authors_episodes.their_config(OFFICIAL, args)
    T = theirs['util.transform']
    transform = T.Compose([T.Resize(size=cfg.val_size), T.ToTensor(),
                           T.Normalize(mean=authors_episodes.MEAN, std=authors_episodes.STD)])
    with authors_episodes.their_workspace(tree[0], cfg.data_root):
        authors_episodes.write_their_lists(theirs, OFFICIAL, cfg, args, [1, 2, 3, 4, 5])
        dataset = theirs['util.dataset'].SemData(split=0, shot=3, data_root=cfg.data_root,
                                                 data_list=cfg.val_list, transform=transform,
                                                 mode='val', data_set='pascal')
        theirs['util.util'].setup_seed(321)
        stacked = dataset[0][2]                                   # K×3×H×W
    expected = []
    for image, _ in supports:
        rgb = np.float32(cv2.cvtColor(cv2.imread(os.path.join(tree[0], image)), cv2.COLOR_BGR2RGB))
        expected.append(transform(rgb, np.zeros(rgb.shape[:2], np.uint8))[0])
    assert torch.equal(stacked, torch.stack(expected))


@needs_their_code
def test_their_shipped_lists_need_the_real_data_set(tree, tmp_path, capsys):
    argv = ['--data-root', tree[0], '--out', str(tmp_path / 'm.jsonl')]
    status, _, err = run_cli(authors_episodes.main, argv, capsys, (RuntimeError, 'error', 2))
    assert_one_error(status, err, 'lists/pascal/fss_list/val/data_list_0.txt line 1: '
                                  'JPEGImages/2007_000033.jpg not found under the data root',
                     '--lists build draws over another')
