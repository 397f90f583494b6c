"""The paper's Tables 1-2 in one command: test every checkpoint of an experiment root with the
authors' protocol and print the table beside the paper's numbers; and the cross-domain table.

    python tools/reproduce.py --exp exp                               # all that exp/ holds
    python tools/reproduce.py --exp exp --benchmarks pascal --seeds 321 123 456 789 1000
    python tools/reproduce.py --exp exp/synthetic --benchmarks synthetic   # the embedded benchmark
    python tools/reproduce.py --exp exp --benchmarks cross_domain --layers 50 --seeds 0 1 2 3 4

The experiment root is laid out as the authors' exp.zip or as train_sccan.py writes it:
<exp>/<data_set>/SCCAN/split<k>/resnet<L>/snapshot/. A cell is one benchmark × backbone × shot ×
fold with a config config/<benchmark>/<benchmark>_split<k>_resnet<L>[_5s].yaml. Its checkpoint is
the config's `weight` when that file is in the snapshot folder, else the best validation
checkpoint there ([win8_]train[5]_epoch_<e>_<mIoU>.pth, the highest mIoU), else the run's
train[5]_latest.pth (runs that never validate, as the synthetic configs'). Each cell is tested as
test_sccan.py tests (test_num episodes per seed, the feature cache when memory allows), and
<out>/table.md and <out>/table.json get mIoU and FB-IoU per fold and their mean over the folds,
each the mean over the seeds, beside the paper's numbers and the difference. Cells without a
checkpoint are listed, not fatal. A finished cell is kept in <out>/cells/ and not recomputed
when the same checkpoint, seeds, episodes and options are asked again, so an interrupted run
resumes where it stopped.

cross_domain: PATNet's benchmark (docs/cross_domain.md). Its columns are the four target
benchmarks (Deepglobe, ISIC, Chest X-ray, FSS-1000; configs config/cross_domain/<target>_resnet<L>
[_5s].yaml) and the mean over them; every column tests the same checkpoint, that of the run of
config/pascal/pascal_all_resnet<L>[_5s].yaml (all 20 PASCAL classes) under --exp, found as above.
No published figure stands beside it: the SCCAN paper has no cross-domain results.
"""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from util import distributed  # noqa: E402
from util.catalogue import CATALOGUE  # noqa: E402
from util.cli import ArgumentParser, non_negative_int, number, positive_int, run_main  # noqa: E402
from util.config import load_config, merged_opts  # noqa: E402
from util.evaluation.checkpoint_evaluation import evaluate_checkpoint  # noqa: E402
from util.evaluation.paper import PAPER  # noqa: E402
from util.evaluation.uncertainty import combined_half_width, half_width  # noqa: E402
from util.files.checks import read_keyed  # noqa: E402
from util.files.run_paths import RunPaths  # noqa: E402
from util.files.writer import write_atomic, write_json  # noqa: E402
from util.log import close_logging, setup_logging  # noqa: E402

BENCHMARKS = {'pascal': 'PASCAL-5i', 'coco': 'COCO-20i', 'synthetic': 'synthetic (embedded)',
              'cross_domain': 'Cross-domain (PATNet\'s protocol; meta-trained on all 20 PASCAL '
                              'classes)'}
FOLDS = (0, 1, 2, 3)
# PATNet's table order
CROSS_DOMAIN = {name: CATALOGUE[name].title for name in ('deepglobe', 'isic', 'lung', 'fss')}
CACHE_CAP_GB = 16      # covers a 5-shot PASCAL fold at 473 (~300 images of 52 MB)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--exp', required=True, help='experiment root (exp_dir), e.g. exp')
    p.add_argument('--benchmarks', nargs='+', default=['pascal', 'coco'], choices=list(BENCHMARKS))
    p.add_argument('--layers', nargs='+', type=int, default=[50, 101], choices=(50, 101))
    p.add_argument('--shots', nargs='+', type=int, default=[1, 5], choices=(1, 5))
    p.add_argument('--folds', nargs='+', type=int, default=list(FOLDS), choices=FOLDS)
    p.add_argument('--seeds', nargs='+', type=non_negative_int, help="episode seeds (default: "
                   "each config's manual_seed, 321); the table shows the mean over them")
    p.add_argument('--episodes', type=positive_int, help='episodes per seed (default: test_num)')
    p.add_argument('--feature-cache-gb', type=cache_size, default='auto',
                   help="memory for the evaluation feature cache: 'auto' (half the free host "
                        f'memory, at most {CACHE_CAP_GB}), a number, or 0 (off)')
    p.add_argument('--out', help='where cells/, table.md and table.json go (default: <exp>/reproduce)')
    p.add_argument('--config-dir', default=os.path.join(REPO, 'config'))
    p.add_argument('--opts', nargs=argparse.REMAINDER, default=[],
                   help='KEY VALUE pairs for every test, e.g. workers 4')
    return p.parse_args(argv)


def cache_size(text):
    """argparse type of --feature-cache-gb: 'auto' or a number of GB >= 0."""
    if text == 'auto':
        return text
    return number(text, float, lambda v: 0 <= v < float('inf'), "'auto' or a number of GB >= 0")


# ---- cells ----------------------------------------------------------------------------------
def config_path(config_dir, benchmark, fold, layers, shot):
    """The test config of a cell; for cross_domain `fold` is the target benchmark."""
    suffix = '' if shot == 1 else f'_{shot}s'
    if benchmark == 'cross_domain':
        return os.path.join(config_dir, benchmark, f'{fold}_resnet{layers}{suffix}.yaml')
    return os.path.join(config_dir, benchmark, f'{benchmark}_split{fold}_resnet{layers}{suffix}.yaml')


def training_config(config_dir, benchmark, fold, layers, shot):
    """The config of the run whose checkpoint a cell tests: its own, or for cross_domain the
    all-classes PASCAL run."""
    if benchmark == 'cross_domain':
        suffix = '' if shot == 1 else f'_{shot}s'
        return os.path.join(config_dir, 'pascal', f'pascal_all_resnet{layers}{suffix}.yaml')
    return config_path(config_dir, benchmark, fold, layers, shot)


def columns(benchmark, args):
    return list(CROSS_DOMAIN) if benchmark == 'cross_domain' else args.folds


def find_cells(args):
    """[dict(benchmark, layers, shot, fold, config, snapshot, checkpoint or None)] of the
    request, in table order; combinations without a config file are not cells."""
    cells = []
    for benchmark in args.benchmarks:
        for layers in args.layers:
            for shot in args.shots:
                for fold in columns(benchmark, args):
                    config = config_path(args.config_dir, benchmark, fold, layers, shot)
                    trained = training_config(args.config_dir, benchmark, fold, layers, shot)
                    if os.path.isfile(config) and os.path.isfile(trained):
                        # the run folder as train_sccan.py --opts ... names it (--opts model
                        # tiny trains under resnet14/)
                        cfg = load_config(trained, merged_opts(args.opts, ['exp_dir', args.exp]))
                        paths = RunPaths.of(cfg)
                        cells.append({'benchmark': benchmark, 'layers': layers, 'shot': shot,
                                      'fold': fold, 'config': config, 'snapshot': paths.snapshot,
                                      'checkpoint': find_best(cfg, paths)})
    return cells


def check_cells(args, cells, missing):
    """Refuse a request with nothing to test (no config for any cell asked, or no checkpoint
    for any), which would replace an earlier table with an empty one."""
    if not cells:
        example = config_path(args.config_dir, args.benchmarks[0], args.folds[0], args.layers[0],
                              args.shots[0])
        raise FileNotFoundError(f'--config-dir {args.config_dir} holds no config of the cells '
                                f'asked (e.g. {example})')
    if len(missing) == len(cells):
        raise FileNotFoundError(f'--exp {args.exp}: none of the {len(cells)} cells asked has a '
                                f'checkpoint (e.g. none in {cells[0]["snapshot"]}); nothing to '
                                'test, the table is left as it was')


def find_best(cfg, paths):
    """The checkpoint to test for a config in the snapshot folder of its RunPaths: the config's
    `weight`, else the best validation checkpoint, else (a run that never validated, e.g. the
    synthetic configs') its latest one; None when there is none."""
    if cfg.weight and os.path.isfile(os.path.join(paths.snapshot, cfg.weight)):
        return os.path.join(paths.snapshot, cfg.weight)
    scored = paths.best_checkpoints()
    return max(scored)[1] if scored else paths.latest if os.path.isfile(paths.latest) else None


def cell_name(cell):
    column = cell['fold'] if cell['benchmark'] == 'cross_domain' else f"split{cell['fold']}"
    return f"{cell['benchmark']}_{column}_resnet{cell['layers']}_{cell['shot']}shot"


# What a stored cell holds; cells of another format are recomputed (2: with intervals).
CELL_FORMAT = 2


def request_of(cell, seeds, episodes, opts):
    """What a cell's result depends on: a stored cell with the same request is reused."""
    stat = os.stat(cell['checkpoint'])
    return {'format': CELL_FORMAT, 'checkpoint': os.path.abspath(cell['checkpoint']), 'size': stat.st_size,
            'mtime_ns': stat.st_mtime_ns, 'config': os.path.abspath(cell['config']),
            'seeds': seeds, 'episodes': episodes, 'opts': opts}


def run_cell(cell, request, cache, cells_dir, env):
    """Test one cell as test_sccan.py tests (util.evaluation.checkpoint_evaluation); returns its
    stored result."""
    opts = merged_opts(cache, request['opts'])     # the user's --opts decide
    # overwrite: the report is this tool's own file, replaced when its cell is recomputed
    report = evaluate_checkpoint(
        load_config(cell['config'], opts), env, cell['checkpoint'], request['seeds'],
        request['episodes'], out=os.path.join(cells_dir, cell_name(cell) + '.report.json'),
        overwrite=True, overrides={'weight': cell['checkpoint'], 'seeds': request['seeds'],
                                   'episodes': request['episodes'], 'opts': opts})
    pooled = report['uncertainty']['pooled']        # no interval: one episode per class
    return {'request': request, 'mean': report['mean'], 'std': report['std'],
            'interval': {m: pooled[m] if pooled['estimable'] else None for m in ('mIoU', 'FB-IoU')},
            'seeds': [r['seed'] for r in report['seeds']], 'episodes': report['episodes']}


def cache_options(setting):
    """Feature cache config overrides for --feature-cache-gb (util.evaluation.feature_cache): the
    cache lives in host memory so that it fits beside the model on a GPU too."""
    gb = min(CACHE_CAP_GB, available_gb() / 2) if setting == 'auto' else float(setting)
    return ['feature_cache_gb', f'{gb:.1f}', 'feature_cache_device', 'host'] if gb >= 1 else []


def available_gb():
    """Free host memory (MemAvailable of /proc/meminfo; 0 where unknown)."""
    try:
        with open('/proc/meminfo') as f:
            fields = dict(line.split(':', 1) for line in f)
        return int(fields['MemAvailable'].split()[0]) / 1024 ** 2
    except (OSError, KeyError, ValueError):
        return 0.0


# ---- the table ------------------------------------------------------------------------------
def percent(value, half=None):
    """'61.4', or '61.4 ± 0.9' with the half-width of an interval; '—' for no value."""
    if value is None:
        return '—'
    return f'{100 * value:.1f}' + ('' if half is None else f' ± {100 * half:.1f}')


def difference(ours, paper):
    return '—' if ours is None or paper is None else f'{100 * ours - paper:+.1f}'


def rows(cells, results):
    """One row per benchmark × backbone × shot: per-fold (cross_domain: per target) and mean
    mIoU / FB-IoU (fractions) and the paper's (percent)."""
    table = []
    for key in dict.fromkeys((c['benchmark'], c['layers'], c['shot']) for c in cells):
        folds = {c['fold']: results.get(cell_name(c)) for c in cells
                 if (c['benchmark'], c['layers'], c['shot']) == key}
        done = {fold: r for fold, r in folds.items() if r}
        width = len(CROSS_DOMAIN) if key[0] == 'cross_domain' else len(FOLDS)
        complete = len(done) == width
        row = {'benchmark': key[0], 'layers': key[1], 'shot': key[2], 'paper': PAPER.get(key)}
        for m, per_fold in (('mIoU', 'folds'), ('FB-IoU', 'fold_FB-IoU')):
            halves = {fold: None if r['interval'][m] is None else half_width(r['interval'][m])
                      for fold, r in done.items()}
            row[per_fold] = {fold: r['mean'][m] for fold, r in done.items()}
            row[per_fold + '_half_width'] = halves
            row[m] = sum(row[per_fold].values()) / width if complete else None
            row[m + '_half_width'] = (combined_half_width(list(halves.values()))
                                      if complete and None not in halves.values() else None)
        table.append(row)
    return table


def markdown(table, missing, seeds_note):
    lines = [f'# SCCAN: mIoU and FB-IoU (%) per fold (cross-domain: per target benchmark) and '
             f'their mean; {seeds_note}', '',
             'Each cell: ours ± half its 95 % bootstrap interval over episodes (paper); the mean '
             '± √(Σ cell ±²) / n over its n cells (independent runs); Δ = ours − paper. No ±: '
             'no interval, every class of a cell had a single episode (or, for the mean, of one '
             'of its cells).', '']
    for benchmark in dict.fromkeys(r['benchmark'] for r in table):
        keys = list(CROSS_DOMAIN) if benchmark == 'cross_domain' else FOLDS
        names = list(CROSS_DOMAIN.values()) if benchmark == 'cross_domain' else \
            [f'fold {f}' for f in FOLDS]
        lines += [f'## {BENCHMARKS[benchmark]}', '',
                  f'| backbone | shot | {" | ".join(names)} | mIoU | Δ | FB-IoU | Δ |',
                  '| --- ' * (len(keys) + 6) + '|']
        for r in (r for r in table if r['benchmark'] == benchmark):
            paper = r['paper'] or {}
            paper_folds = paper.get('folds') or (None,) * len(keys)
            folds = [percent(r['folds'].get(f), r['folds_half_width'].get(f)) +
                     (f' ({p})' if p is not None else '') for f, p in zip(keys, paper_folds)]
            miou = percent(r['mIoU'], r['mIoU_half_width']) + (f" ({paper['mIoU']})" if paper else '')
            fb = percent(r['FB-IoU'], r['FB-IoU_half_width']) + (f" ({paper['FB-IoU']})" if paper else '')
            lines.append(f"| ResNet-{r['layers']} | {r['shot']} | {' | '.join(folds)} | {miou} | "
                         f"{difference(r['mIoU'], paper.get('mIoU'))} | {fb} | "
                         f"{difference(r['FB-IoU'], paper.get('FB-IoU'))} |")
        lines.append('')
    if missing:
        lines += ['Not tested (no checkpoint found):', '']
        lines += [f"- {cell_name(c)}: no checkpoint in {c['snapshot']}" for c in missing]
        lines.append('')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    with distributed.process_group() as env:
        setup_logging(is_main=env.is_main)
        try:
            return reproduce(args, env)
        finally:
            close_logging()


def reproduce(args, env):
    """Test the cells the arguments ask for (those kept from earlier runs excepted); write and
    print the table. Returns its rows."""
    for folder, option in ((args.exp, '--exp'), (args.config_dir, '--config-dir')):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'{option} {folder}: folder not found')
    out = args.out or os.path.join(args.exp, 'reproduce')
    cells_dir = os.path.join(out, 'cells')
    opts = merged_opts(['exp_dir', args.exp], args.opts)
    cache = cache_options(args.feature_cache_gb)    # changes speed, not results: not in requests
    cells = find_cells(args)
    missing = [c for c in cells if c['checkpoint'] is None]
    check_cells(args, cells, missing)
    os.makedirs(cells_dir, exist_ok=True)
    results, kept = {}, 0
    for cell in (c for c in cells if c['checkpoint']):
        path = os.path.join(cells_dir, cell_name(cell) + '.json')
        request = request_of(cell, args.seeds, args.episodes, opts)
        result = read_keyed(path, 'request', request)
        if result is None:
            print(f'[reproduce] testing {cell_name(cell)}: {cell["checkpoint"]}', flush=True)
            result = run_cell(cell, request, cache, cells_dir, env)
            write_json(path, result)
        else:
            kept += 1
            print(f'[reproduce] {cell_name(cell)}: kept from {path}', flush=True)
        results[cell_name(cell)] = result
    table = rows(cells, results)
    seeds = sorted({seed for r in results.values() for seed in r['seeds']})
    text = markdown(table, missing, f'mean over seeds {seeds}' if seeds else 'nothing tested')
    write_atomic(os.path.join(out, 'table.md'), text)
    write_json(os.path.join(out, 'table.json'),
               {'rows': table, 'cells': results, 'missing': [cell_name(c) for c in missing]})
    print('\n' + text)
    cells = f'{len(results)} cell' + ('' if len(results) == 1 else 's')
    print(f'[reproduce] {cells} ({len(results) - kept} tested now, {kept} kept), '
          f'{len(missing)} without a checkpoint; {os.path.join(out, "table.md")}')
    return table


if __name__ == '__main__':
    run_main(main, *distributed.FAILURES)
