"""A test report as a picture (test_sccan.py --plot FILE.png): each novel class's IoU with its 95 %
bootstrap interval, the mIoU with its interval, each seed's mIoU, and the paper's mIoU of the fold
where the paper gives one.

matplotlib is an optional extra: it is imported here only, and only when a picture is drawn;
`require_matplotlib()` lets a script say so in one line before its long work starts.
"""
import io

import numpy as np

from util.files.writer import write_atomic
from util.folds import has_folds

HINT = ('--plot needs matplotlib, an optional extra: pip install matplotlib (or run without '
        '--plot)')


class MissingExtra(ValueError):
    """An optional dependency that is not installed (a usage error: one line, status 2)."""


def require_matplotlib() -> None:
    """Raise MissingExtra with the install hint when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtra(HINT) from None


def plot_report(report: dict, path: str, paper_miou: float | None = None, paper_source: str = '') -> str:
    """Draw `report` (test_sccan.py's, with 'uncertainty') into the PNG `path` (atomically).

    Args:
        report: the test report: per seed class_IoU, mIoU, class_ids (class_names, where the
            report has them); uncertainty.pooled.
        path: the PNG to write.
        paper_miou: the paper's mIoU (%) of this fold, drawn as a line; None: not drawn.
        paper_source: where that number comes from, for the legend.
    """
    require_matplotlib()
    import matplotlib
    matplotlib.use('Agg')                   # no display needed
    import matplotlib.pyplot as plt

    seeds = report['seeds']
    classes = seeds[0].get('class_names') or [str(c) for c in seeds[0]['class_ids']]
    pooled = report['uncertainty']['pooled']
    class_iou = 100 * np.mean([s['class_IoU'] for s in seeds], axis=0)
    class_ci = 100 * np.array(pooled['class_IoU'])                       # C×2
    miou, miou_ci = 100 * report['mean']['mIoU'], 100 * np.array(pooled['mIoU'])
    x = np.arange(len(classes) + 1)
    values = np.append(class_iou, miou)
    lows = np.append(class_ci[:, 0], miou_ci[0])
    highs = np.append(class_ci[:, 1], miou_ci[1])

    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(x) + 3), 4.2))
    colours = ['#8fb3d9'] * len(classes) + ['#2b6cb0']
    ax.bar(x, values, color=colours, width=0.7)
    if pooled.get('estimable', True):
        ax.errorbar(x, values, yerr=[values - lows, highs - values], fmt='none', ecolor='black',
                    capsize=3, linewidth=1, label='95 % bootstrap interval')
    if len(seeds) > 1:
        ax.scatter(np.full(len(seeds), x[-1]), [100 * s['mIoU'] for s in seeds], marker='o',
                   facecolor='white', edgecolor='black', zorder=3, label="each seed's mIoU")
    if paper_miou is not None:
        ax.axhline(paper_miou, color='#c53030', linestyle='--', linewidth=1,
                   label=f'paper: {paper_miou} {paper_source}'.rstrip())
    ax.set_xticks(x, list(classes) + ['mIoU'])
    folds = has_folds(report['data_set'])
    ax.set_xlabel('novel class' if folds else 'class')
    ax.set_ylabel('IoU (%)')
    ax.set_ylim(0, 100)
    interval = (f'[{miou_ci[0]:.1f}, {miou_ci[1]:.1f}]' if pooled.get('estimable', True) else
                '(no interval: a single episode per class)')
    fold = f" fold {report['split']}" if folds else ''
    ax.set_title(f"{report['data_set']}{fold}, {report['shot']}-shot: "
                 f"{report['episodes']} episodes × {len(seeds)} seed(s); mIoU {miou:.1f} "
                 f"{interval}", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc='upper center', bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format='png', dpi=120)
    plt.close(fig)
    write_atomic(path, png.getvalue())
    return path
