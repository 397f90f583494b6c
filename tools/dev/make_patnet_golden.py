"""Write the golden files of tests/test_cross_domain_golden.py by running PATNet's own code
(github.com/slei109/PATNet; nothing of it is committed here):

    PATNET=/path/to/their/checkout python tools/dev/make_patnet_golden.py [--out tests/golden]

The Python that runs this needs what their data code imports: torch, torchvision (their
data/dataset.py builds its transforms with it), Pillow, tensorboardX (common/logger.py), OpenCV and
NumPy; and PyYAML and tqdm for this repository's modules it imports. torchvision does not import
beside this repository's torch wheel, so use a separate venv,
e.g. `python3 -m venv /tmp/patnet-venv && /tmp/patnet-venv/bin/pip install torch==2.14.1
torchvision==0.29.1 tensorboardX Pillow opencv-python-headless pyyaml tqdm`.

It writes
- patnet_episodes.json: on the trees of tools/make_cross_domain_trees.py (seed 0), for each
  benchmark (fss, deepglobe, isic, lung), seeds 0 and 1, shots 1 and 5, every episode their
  test loop draws (test.py: fix_randseed(seed), then their DataLoader with batch size 30 and no
  workers; 600 episodes, or one per image for FSS-1000): class id, query and supports, as
  names relative to the benchmark's folder (for lung, the mask names their loader lists); and,
  for the first episodes of seed 0 at 5 shots, fingerprints of the 400×400 images and masks
  their __getitem__ returns.
- patnet_metrics.json: mIoU and FB-IoU of their Evaluator.classify_prediction and
  AverageMeter (update, compute_iou) on the predictions of `metric_cases`.
- patnet_deepglobe_prep.json: their data/preprocess.py (steps 1-3, kept as comments in their
  file and run here uncommented) on the release image of make_cross_domain_trees
  (write_deepglobe_release): the tiles kept, their class masks and image tiles.
"""
import contextlib
import hashlib
import importlib
import os
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # up from tools/dev/
sys.path.insert(0, REPO)

from tools import make_cross_domain_trees as trees  # noqa: E402
from util.cli import ArgumentParser, run_main  # noqa: E402
from util.files.writer import write_json  # noqa: E402

BENCHMARKS = trees.TREES
SEEDS, SHOTS = (0, 1), (1, 5)
BATCH_SIZE = 30            # test.py's default --bsz
LOAD_CHECKS = 3            # episodes of seed 0, 5 shots, whose loaded tensors are fingerprinted
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# AverageMeter's classes of interest for the test split (their build_class_ids)
METRIC_CLASSES = {'fss': range(760, 1000), 'deepglobe': range(6), 'isic': range(3),
                  'lung': range(1)}


def sha1(array):
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def run_key(seed, shot):
    return f'seed{seed}_shot{shot}'


# ---- predictions scored by both bookkeepings ------------------------------------------------
def metric_cases(benchmark, episodes=45, size=24):
    """[(PATNet class id, prediction, ground truth)] (size×size uint8 0/1) for `benchmark`:
    rectangles and their noisy copies, with episodes whose truth, prediction or both are empty;
    for FSS-1000 only 5 of its 240 classes get episodes (the others count 0 in both)."""
    ids = list(METRIC_CLASSES[benchmark])
    rng = np.random.RandomState(len(ids))
    classes = rng.choice(ids, 5, replace=False) if len(ids) > 5 else np.array(ids)
    cases = []
    for e in range(episodes):
        truth = np.zeros((size, size), np.uint8)
        y, x = rng.randint(0, size // 2, size=2)
        h, w = rng.randint(2, size // 2, size=2)
        truth[y:y + h, x:x + w] = 1
        prediction = truth ^ (rng.rand(size, size) < 0.15).astype(np.uint8)
        if e % 9 == 4:
            truth[:] = 0
        if e % 9 == 6:
            prediction[:] = 0
        if e % 9 == 8:
            truth[:], prediction[:] = 0, 0
        cases.append((int(classes[e % len(classes)]), prediction, truth))
    return cases


# ---- their code -------------------------------------------------------------------------------
@contextlib.contextmanager
def their_code(root):
    """Their packages importable, with their root as the working folder (DatasetFSS opens
    ./data/splits/fss/<split>.txt)."""
    here = os.getcwd()
    sys.path.insert(0, root)
    os.chdir(root)
    try:
        yield {name: importlib.import_module(name) for name in
               ('data.dataset', 'common.utils', 'common.evaluation', 'common.logger')}
    finally:
        os.chdir(here)
        sys.path.remove(root)


@contextlib.contextmanager
def cuda_as_identity():
    """AverageMeter moves its buffers with Tensor.cuda(); on a CPU-only machine that move is
    made a no-op, which changes no number of the bookkeeping."""
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = cuda


def image_fingerprint(tensor):
    """sha1 of the uint8 RGB image behind a ToTensor + Normalize output (3×H×W): undoing the
    normalisation recovers the 0..255 values exactly (float32 error far below 0.5)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    scaled = (tensor * std + mean) * 255
    assert (scaled - scaled.round()).abs().max() < 0.01, 'not a normalised uint8 image'
    return sha1(scaled.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())


def mask_fingerprint(tensor):
    return sha1(tensor.to(torch.uint8).numpy())


def their_episodes(modules, datapath, benchmark, seed, shot):
    """[(class id, query name, [support names]), ...] of their test loop, with the loaded
    fingerprints of the first LOAD_CHECKS episodes."""
    dataset_module, utils = modules['data.dataset'], modules['common.utils']
    dataset_module.FSSDataset.initialize(img_size=400, datapath=datapath)
    loader = dataset_module.FSSDataset.build_dataloader(benchmark, BATCH_SIZE, 0, 0, 'test', shot)
    utils.fix_randseed(seed)
    folder = os.path.join(datapath, BENCHMARKS[benchmark])
    relative = lambda path: os.path.relpath(path, folder)   # noqa: E731
    episodes, loads = [], []
    for batch in loader:
        for b in range(len(batch['query_name'])):
            supports = [relative(batch['support_names'][k][b]) for k in range(shot)]
            episodes.append((int(batch['class_id'][b]), relative(batch['query_name'][b]),
                             supports))
            if len(loads) < LOAD_CHECKS:
                loads.append({
                    'query': [image_fingerprint(batch['query_img'][b]),
                              mask_fingerprint(batch['query_mask'][b])],
                    'supports': [[image_fingerprint(batch['support_imgs'][b][k]),
                                  mask_fingerprint(batch['support_masks'][b][k])]
                                 for k in range(shot)]})
    return episodes, loads


def episodes_golden(modules, datapath):
    golden = {}
    for benchmark in BENCHMARKS:
        names, runs, loads = {}, {}, None
        index = lambda name: names.setdefault(name, len(names))   # noqa: E731
        for seed in SEEDS:
            for shot in SHOTS:
                episodes, first = their_episodes(modules, datapath, benchmark, seed, shot)
                runs[run_key(seed, shot)] = [[c, index(q)] + [index(s) for s in supports]
                                             for c, q, supports in episodes]
                if seed == 0 and shot == 5:
                    loads = first
                print(f'{benchmark} seed {seed} {shot}-shot: {len(episodes)} episodes')
        golden[benchmark] = {'names': list(names), 'runs': runs, 'loads': loads}
    return golden


def metrics_golden(modules):
    evaluation, logger = modules['common.evaluation'], modules['common.logger']
    evaluation.Evaluator.initialize()
    golden = {}
    with cuda_as_identity():
        for benchmark, class_ids in METRIC_CLASSES.items():
            meter = logger.AverageMeter(types.SimpleNamespace(benchmark=benchmark,
                                                              class_ids=class_ids))
            cases = metric_cases(benchmark)
            for start in range(0, len(cases), BATCH_SIZE):
                chunk = cases[start:start + BATCH_SIZE]
                # float masks: CPU histc takes no integer tensors (their runs were on CUDA)
                prediction = torch.from_numpy(np.stack([p for _, p, _ in chunk])).float()
                batch = {'query_mask': torch.from_numpy(np.stack([t for _, _, t in chunk])).float(),
                         'class_id': torch.tensor([c for c, _, _ in chunk])}
                inter, union = evaluation.Evaluator.classify_prediction(prediction, batch)
                meter.update(inter, union, batch['class_id'], loss=None)
            miou, fb_iou = meter.compute_iou()
            golden[benchmark] = {'mIoU': float(miou), 'FB-IoU': float(fb_iou),
                                 'episodes': len(cases)}
    return golden


# ---- their Deepglobe preprocessing ------------------------------------------------------------
def preprocess_steps(root):
    """The code of the three steps of their data/preprocess.py, which keeps it as comments:
    '# ' taken off each line ('#' alone, blank). One repair: in step 3 the body of
    `for label in range(0, 6):` lost its indentation in their file; every line after it is that
    body (it uses `label`) and is indented."""
    with open(os.path.join(root, 'data', 'preprocess.py')) as f:
        lines = f.read().splitlines()
    header = [line for line in lines[:lines.index('') + 1]]       # their imports
    steps, current = [], None
    for line in lines:
        if line.startswith('# step '):
            current = []
            steps.append(current)
        elif current is not None and not line.startswith('###'):
            current.append(line[2:] if line.startswith('# ') else '' if line == '#' else line)
    loop = steps[2].index('for label in range(0, 6):')
    steps[2][loop + 1:] = ['    ' + line for line in steps[2][loop + 1:]]
    return ['\n'.join(header + step) for step in steps]


def run_preprocess(root, release, work):
    """Run their three steps on the release folder; returns their folders."""
    folders = {name: os.path.join(work, name) + '/' for name in ('image', 'label', 'filtered', 'binary')}
    for folder in folders.values():
        os.makedirs(folder)
    for c in range(1, 7):
        os.makedirs(os.path.join(folders['binary'], str(c)))
    step1, step2, step3 = preprocess_steps(root)
    exec(step1, {'path_folder': release, 'YOUR_PATH_TO_DATA': release + '/',
                 'YOUR_PATH_TO_IMAGE': folders['image'], 'YOUR_PATH_TO_LABEL': folders['label']})
    exec(step2, {'YOUR_PATH_TO_DATA': folders['label'],
                 'YOUR_PATH_TO_FILTER_DATA': folders['filtered']})
    exec(step3, {'YOUR_PATH_TO_FILTERED_LABEL_DATA': folders['filtered'],
                 'YOUR_PATH_TO_BINARY_MASK_FOR_EACH_CLASS': folders['binary']})
    return folders


def deepglobe_golden(root):
    import cv2
    with tempfile.TemporaryDirectory() as work:
        release = os.path.join(work, 'release')
        trees.write_deepglobe_release(release)
        folders = run_preprocess(root, release, os.path.join(work, 'out'))
        images = {name[:-4]: sha1(cv2.imread(os.path.join(folders['image'], name), cv2.IMREAD_COLOR))
                  for name in sorted(os.listdir(folders['image']))}
        classes = {}
        for c in range(1, 7):
            with open(os.path.join(folders['binary'], f'{c}.txt')) as f:
                listed = f.read().split()
            classes[str(c)] = {name: sha1(cv2.imread(os.path.join(folders['binary'], str(c),
                                                                  name + '.png'),
                                                     cv2.IMREAD_GRAYSCALE))
                               for name in sorted(listed)}
        return {'image_tiles': images,
                'kept_label_tiles': sorted(n[:-4] for n in os.listdir(folders['filtered'])),
                'class_masks': classes}


# ---- main ---------------------------------------------------------------------------------------
def provenance(root):
    import PIL
    import cv2
    import torchvision
    commit = subprocess.run(['git', '-C', root, 'rev-parse', 'HEAD'], capture_output=True,
                            text=True)
    return {'patnet_commit': commit.stdout.strip() if commit.returncode == 0 else 'unknown',
            'torch': torch.__version__, 'torchvision': torchvision.__version__,
            'Pillow': PIL.__version__, 'opencv': cv2.__version__, 'numpy': np.__version__,
            'written_by': 'tools/dev/make_patnet_golden.py'}


def write(path, content):
    write_json(path, content, compact=True)
    print(f'wrote {path}')


def main(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default=os.path.join(REPO, 'tests', 'golden'))
    args = p.parse_args(argv)
    root = os.environ.get('PATNET')
    if not root or not os.path.isfile(os.path.join(root, 'data', 'fss.py')):
        raise FileNotFoundError(f'PATNET={root or ""}: set it to a checkout of '
                                'github.com/slei109/PATNet (its data/fss.py not found)')
    root = os.path.abspath(root)
    source = provenance(root)
    with tempfile.TemporaryDirectory() as work, their_code(root) as modules:
        datapath = os.path.join(work, 'trees')
        trees.write_trees(datapath, seed=0)
        episodes = episodes_golden(modules, datapath)
        metrics = metrics_golden(modules)
    write(os.path.join(args.out, 'patnet_episodes.json'),
          {'source': source, 'trees_seed': 0, 'batch_size': BATCH_SIZE, 'benchmarks': episodes})
    write(os.path.join(args.out, 'patnet_metrics.json'), {'source': source, 'benchmarks': metrics})
    write(os.path.join(args.out, 'patnet_deepglobe_prep.json'),
          {'source': source, **deepglobe_golden(root)})


if __name__ == '__main__':
    run_main(main)
