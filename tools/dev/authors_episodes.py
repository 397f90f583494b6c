"""The episodes the authors' test_sccan.py draws, as a manifest our test_sccan.py --episodes-from
replays: this model, or theirs, scored on exactly their episodes.

    export OFFICIAL_SCCAN=/path/to/a/clone/of/github.com/Sam1224/SCCAN
    python tools/dev/authors_episodes.py --data-root ../data/VOCdevkit2012/VOC2012 --split 0 \\
        --out exp/authors_pascal_split0_1shot.jsonl

Their own loader runs, nothing of ours: their util/dataset.py SemData in val mode with their val
transform (util/transform.py Resize, ToTensor, Normalize: `resized_val: True`), in their
DataLoader (batch_size_val 1, no shuffling, `workers` of their config), each seed set by their
util/util.py setup_seed(seed) just before the loop as their validate() does, and the loader
iterated epoch after epoch until the episodes are drawn (their test_num: 1,000 PASCAL, 4,000
COCO; seeds: their seed_array, [321]). Which files each episode reads is recorded from their
cv2.imread calls; supports go into the manifest in the order they stack them (reverse draw
order).

Their draws DEPEND ON THE NUMBER OF WORKERS: SemData draws from Python's `random`, and each
DataLoader worker has its own generator (seeded by torch with base seed + worker id, the base
seed drawn anew each epoch), while with 0 workers all episodes come from the one stream seeded
by setup_seed. Hence --workers defaults to their config's `workers` (8 in every config of
theirs), which is what their script uses.

Their SemData reads the episode lists from ./lists/<data_set>/fss_list/val/ with paths starting
with their config's data_root (../data/VOCdevkit2012/VOC2012, ../data/MSCOCO2014). The tool runs
it in a scratch folder where that path leads to --data-root, with either
  --lists shipped (default): the lists their repository ships (built on their machine), or
  --lists build: lists built over --data-root by their util/dataset.py make_dataset from
    --val-list (default: their lists/<data_set>/val.txt), as their commented-out code does.
Nothing is written into their clone.
"""
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # up from tools/dev/
sys.path.insert(0, REPO)

from tools.dev import reference  # noqa: E402
from util.episodes import Episode  # noqa: E402
from util.cli import ArgumentParser, non_negative_int, positive_int, run_main  # noqa: E402
from util.evaluation.manifest import EpisodeRecord, make_header, write_manifest  # noqa: E402
from util.files.checks import check_outputs  # noqa: E402
from util.files.writer import write_atomic  # noqa: E402
from util.folds import fold_classes  # noqa: E402

TEST_NUM = {'pascal': 1000, 'coco': 4000}      # their test_sccan.py validate()
SEEDS = [321]                                  # their test_sccan.py seed_array
MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]   # their test_sccan.py main()
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data-root', required=True, help='the data root our configs name')
    p.add_argument('--data-set', choices=tuple(TEST_NUM), default='pascal')
    p.add_argument('--split', type=int, choices=(0, 1, 2, 3), default=0)
    p.add_argument('--shot', type=positive_int, default=1)
    p.add_argument('--out', required=True, help='the manifest to write (JSON Lines)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    p.add_argument('--seeds', type=non_negative_int, nargs='+', default=SEEDS,
                   help=f'their val seeds (default: their seed_array, {SEEDS})')
    p.add_argument('--episodes', type=positive_int,
                   help='episodes per seed (default: their test_num, 1000 PASCAL / 4000 COCO)')
    p.add_argument('--workers', type=non_negative_int,
                   help="DataLoader workers (default: their config's, as their script runs; "
                        'the episodes depend on it)')
    p.add_argument('--lists', choices=('shipped', 'build'), default='shipped',
                   help='their shipped episode lists, or lists built over --data-root by their '
                        'make_dataset (default: shipped)')
    p.add_argument('--val-list', help="with --lists build: the val list (default: their "
                   'lists/<data_set>/val.txt)')
    p.add_argument('--config', help='their config (default: their config/<data_set>/'
                   '<data_set>_split<k>_resnet50[_5s].yaml)')
    p.add_argument('--official', help=f'their clone (default: ${reference.ENV})')
    return p.parse_args(argv)


def their_config(root, args):
    """(config path relative to their clone, their config object)."""
    relative = args.config or os.path.join(
        'config', args.data_set,
        f'{args.data_set}_split{args.split}_resnet50{"_5s" if args.shot > 1 else ""}.yaml')
    path = os.path.join(root, relative)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'their config not found: {path}')
    cfg = reference.official_modules(root, reference.LOADER_MODULES)[
        'util.config'].load_cfg_from_cfg_file(path)
    if os.path.isabs(cfg.data_root):
        raise ValueError(f'{path}: data_root {cfg.data_root} is absolute; their configs name '
                         'it relative to their repository')
    if cfg.batch_size_val != 1:
        raise ValueError(f'{path}: batch_size_val {cfg.batch_size_val}; their test loop scores '
                         'batches of 1')
    return relative, cfg


@contextlib.contextmanager
def their_workspace(data_root, their_root):
    """A scratch folder to run their loader in (the current directory meanwhile): its
    lists/<data_set>/fss_list/val/ is where their SemData looks, and their config's data_root
    (relative to it) leads to `data_root`. Yields the folder; removed afterwards."""
    scratch = tempfile.mkdtemp(prefix='authors-episodes-')
    run = os.path.join(scratch, 'run')
    link = os.path.normpath(os.path.join(run, their_root))
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.makedirs(run, exist_ok=True)
    os.symlink(os.path.abspath(data_root), link)
    cwd = os.getcwd()
    os.chdir(run)
    try:
        yield run
    finally:
        os.chdir(cwd)
        shutil.rmtree(scratch)


def write_their_lists(theirs, root, cfg, args, novel):
    """lists/<data_set>/fss_list/val/{data_list,sub_class_file_list}_<k>.txt in the current
    folder: copies of theirs, or built by their make_dataset over the data root."""
    folder = os.path.join('lists', args.data_set, 'fss_list', 'val')
    os.makedirs(folder)
    names = [f'data_list_{args.split}.txt', f'sub_class_file_list_{args.split}.txt']
    if args.lists == 'shipped':
        for name in names:
            source = os.path.join(root, folder, name)
            if not os.path.isfile(source):
                raise FileNotFoundError(f'their episode list not found: {source}')
            shutil.copyfile(source, os.path.join(folder, name))
        check_listed_files(os.path.join(root, folder, names[0]), os.path.join(folder, names[0]),
                           cfg.data_root, args.data_root)
        return
    val_list = os.path.abspath(args.val_list) if args.val_list else os.path.join(
        root, 'lists', args.data_set, 'val.txt')
    images, class_files = theirs['util.dataset'].make_dataset(args.split, cfg.data_root, val_list,
                                                              novel, filter_intersection=False)
    # The format of their commented-out writer in SemData.__init__.
    write_atomic(os.path.join(folder, names[0]),
                 ''.join(f'{image} {label}\n' for image, label in images))
    write_atomic(os.path.join(folder, names[1]), str(class_files))


def check_listed_files(their_list, copy, their_root, data_root):
    """Every image and label of their episode list (its copy in the current folder) exists
    under the data root; else the first missing one, named as the data root holds it."""
    with open(copy) as f:
        for n, line in enumerate(f, start=1):
            for path in line.split():
                if not os.path.isfile(path):
                    relative = os.path.relpath(os.path.normpath(path), os.path.normpath(their_root))
                    raise FileNotFoundError(
                        f'{their_list} line {n}: {relative} not found under the data root '
                        f'{data_root} (their lists are of the real data set; --lists build '
                        'draws over another)')


class RecordingReads(torch.utils.data.Dataset):
    """Their dataset, item by item, with the files each item reads (their module's cv2.imread
    calls, in order) and its class position: {'index', 'reads', 'subcls'}."""

    def __init__(self, dataset, module):
        self.dataset, self.module, self.reads = dataset, module, None

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.reads = []
        item = self.dataset[index]
        return {'index': index, 'reads': self.reads, 'subcls': int(item[4][0])}

    def imread(self, path, *flags):
        self.reads.append(path)
        return self.cv2.imread(path, *flags)

    @contextlib.contextmanager
    def recording(self):
        """Their module's cv2 replaced, while inside, by one whose imread records the path."""
        self.cv2 = self.module.cv2
        self.module.cv2 = _Cv2With(self.cv2, self.imread)
        try:
            yield self
        finally:
            self.module.cv2 = self.cv2


class _Cv2With:
    def __init__(self, cv2, imread):
        self._cv2, self.imread = cv2, imread

    def __getattr__(self, name):
        return getattr(self._cv2, name)


def draw(theirs, recorder, cfg, seed, episodes, workers):
    """Their test loop's data side for one seed: setup_seed, then the loader epoch after epoch
    until `episodes` items. Returns the recorded items."""
    # torch warns when there are more workers than cores; their script runs with it.
    warnings.filterwarnings('ignore', message='This DataLoader will create')
    loader = torch.utils.data.DataLoader(recorder, batch_size=cfg.batch_size_val, shuffle=False,
                                         num_workers=workers, pin_memory=False, sampler=None,
                                         collate_fn=lambda batch: batch[0])
    theirs['util.util'].setup_seed(seed, cfg.seed_deterministic)
    items = []
    while len(items) < episodes:
        for item in loader:
            if len(items) == episodes:
                break
            items.append(item)
    return items


def record(item, seed, e, data_root_text, classes):
    """The manifest line of a recorded item: reads are the query image, its label, then each
    support's image and label in draw order (their SemData.__getitem__)."""
    relative = [os.path.relpath(os.path.normpath(p), os.path.normpath(data_root_text))
                for p in item['reads']]
    drawn = [tuple(relative[i:i + 2]) for i in range(2, len(relative), 2)]
    return EpisodeRecord(seed, e, Episode(tuple(relative[:2]), tuple(drawn[::-1]),
                                          classes[item['subcls']]))


def their_commit(root):
    commit = subprocess.run(['git', '-C', root, 'rev-parse', 'HEAD'], capture_output=True,
                            text=True)
    return commit.stdout.strip() if commit.returncode == 0 else 'commit unknown (not a git clone)'


def main(argv=None):
    args = parse_args(argv)
    root = reference.official_root(args.official)
    if not os.path.isdir(args.data_root):
        raise FileNotFoundError(f'data root not found: {args.data_root}')
    check_outputs([args.out], [p for p in (args.val_list,) if p], args.overwrite)
    theirs = reference.official_modules(root, reference.LOADER_MODULES)
    config, cfg = their_config(root, args)
    workers = cfg.workers if args.workers is None else args.workers
    episodes = args.episodes or TEST_NUM[args.data_set]
    novel = fold_classes(args.data_set, args.split, cfg.use_split_coco)[1]
    T = theirs['util.transform']
    resize = T.Resize if cfg.resized_val else T.test_Resize
    transform = T.Compose([resize(size=cfg.val_size), T.ToTensor(), T.Normalize(mean=MEAN, std=STD)])
    records = []
    with their_workspace(args.data_root, cfg.data_root):
        write_their_lists(theirs, root, cfg, args, novel)
        dataset = theirs['util.dataset'].SemData(
            split=args.split, shot=args.shot, data_root=cfg.data_root, data_list=cfg.val_list,
            transform=transform, mode='val', ann_type=cfg.ann_type, data_set=args.data_set,
            use_split_coco=cfg.use_split_coco)
        if dataset.sub_val_list != novel:
            raise ValueError(f'their novel classes {dataset.sub_val_list} are not ours {novel}')
        with RecordingReads(dataset, theirs['util.dataset']).recording() as recorder:
            for seed in args.seeds:
                print(f'[authors_episodes] seed {seed}: {episodes} episodes, {workers} workers',
                      flush=True)
                items = draw(theirs, recorder, cfg, seed, episodes, workers)
                records += [record(item, seed, e, cfg.data_root, novel)
                            for e, item in enumerate(items)]
    source = (f"the authors' test loader (github.com/Sam1224/SCCAN {their_commit(root)}: "
              f'util/dataset.py SemData val, {args.lists} lists, {workers} workers)')
    header = make_header(args.data_set, args.split, args.shot, novel, args.seeds, episodes, source,
                         config={'path': config, 'workers': workers, 'lists': args.lists})
    write_manifest(args.out, header, records)
    print(f'[authors_episodes] wrote {len(records)} episodes to {args.out}')
    return records


if __name__ == '__main__':
    # RuntimeError: OFFICIAL_SCCAN missing or wrong (tools/dev/reference.py), or raised by their loader
    # (e.g. an image and its label of different sizes).
    run_main(main, (RuntimeError, 'error', 2))
