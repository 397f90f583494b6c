"""Check the weights you downloaded and put them where the configs look (docs/weights.md).

    python tools/weights.py ~/Downloads/exp.zip ~/Downloads/<backbones>.zip   # check, then place
    python tools/weights.py initmodel_download/resnet50_v2.pth                # single files too
    python tools/weights.py                                                   # check what is in place

Sources are zip archives, folders or .pth files: the authors' exp.zip (their meta-trained
checkpoints, placed as exp/<data_set>/SCCAN/split<k>/resnet<L>/snapshot/<name>.pth, the layout
the configs' `weight` and tools/reproduce.py read) and their pre-trained backbones
(resnet50_v2.pth, resnet101_v2.pth, placed in initmodel/). Every file is loaded into the model
it is for before it goes into place (a file that does not load is reported and not placed), and
for each one the command prints its SHA-256 (to compare with what others report) and the
configs it fits (split, shot, backbone). No file is replaced by a different one without
--overwrite, and nothing is written when one would be. Exit status 2 when a file failed.
"""
import argparse
import contextlib
import functools
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from util.cli import ArgumentParser, error_line, run_main  # noqa: E402
from util.files.weights import (conflicts, find_weights, fitting_configs, in_place,  # noqa: E402
                                install, load_configs, same_path, staging_folder)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('sources', nargs='*', metavar='SOURCE',
                   help='zip archives, folders or .pth files; none: check what is in place')
    p.add_argument('--exp', default=os.path.join(REPO, 'exp'),
                   help='where the checkpoints go (the configs\' exp_dir)')
    p.add_argument('--initmodel', default=os.path.join(REPO, 'initmodel'),
                   help='where the backbones go (the configs\' backbone_weights folder)')
    p.add_argument('--config-dir', default=os.path.join(REPO, 'config'),
                   help='configs to match the checkpoints with')
    p.add_argument('--overwrite', action='store_true',
                   help='replace a different file at a destination')
    return p.parse_args(argv)


def shown(path):
    """`path` relative to the current folder when it lies below it."""
    relative = os.path.relpath(path)
    return path if relative.startswith('..') else relative


def gather(args):
    """The weights files to install, after the checks that come before any writing."""
    if not args.sources:
        found = in_place(args.exp, args.initmodel)
        if not found:
            raise FileNotFoundError(f'no checkpoint in the authors\' layout below {shown(args.exp)} '
                                    f'and no backbone in {shown(args.initmodel)}: give the files '
                                    'you downloaded (docs/weights.md says where they are)')
        return found
    found = []
    for source in args.sources:
        files, others = find_weights(source, args.exp, args.initmodel)
        print(f'{source}: {len(files)} weights file(s)' +
              (f'; {others} other file(s) not needed (logs, other backbones)' if others else ''))
        found += files
    problems = conflicts(found, args.overwrite)
    if problems:
        raise FileExistsError('nothing was written: ' + '; '.join(problems))
    return found


def report(installed, configs, config_dir):
    weights = installed.weights
    fits = [shown(path) for path in fitting_configs(installed, configs)]
    if weights.backbone and fits:
        fits = [f'the backbone_weights of {len(fits)} configs, e.g. {fits[0]}']
    origin = '' if installed.status == 'checked' else f', from {weights.shown}'
    print(f'ok  {shown(weights.destination)}  ({installed.status}{origin})\n'
          f'    sha256 {installed.sha256}\n'
          f'    {installed.what}; fits {", ".join(fits) or "no config in " + shown(config_dir)}',
          flush=True)


def main(argv=None):
    args = parse_args(argv)
    found = gather(args)
    configs = load_configs(args.config_dir, args.exp, args.initmodel)
    failed = 0
    with contextlib.ExitStack() as stack:
        staging = {}

        def staging_for(root):      # made when a first file is copied below root
            if root not in staging:
                staging[root] = stack.enter_context(staging_folder(root))
            return staging[root]
        for weights in found:
            root = args.initmodel if weights.backbone else args.exp
            try:
                report(install(weights, functools.partial(staging_for, root)), configs, args.config_dir)
            except (ValueError, OSError) as e:      # the next file may be fine
                kept = ' (not placed)' if not same_path(weights.member, weights.destination) else ''
                print(f'error: {error_line(e)}{kept}', file=sys.stderr, flush=True)
                failed += 1
    print(f'{len(found) - failed} of {len(found)} weights file(s) load' +
          (f'; {failed} failed' if failed else ''))
    return 2 if failed else 0


if __name__ == '__main__':
    sys.exit(run_main(main))
