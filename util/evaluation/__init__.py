"""Scoring a model on episodes, and what is made of the scores:

    evaluate.py                 the one evaluation loop (training's validation, test_sccan.py)
    checkpoint_evaluation.py    meta-testing a checkpoint: the report test_sccan.py writes
    metrics.py                  mIoU, FB-IoU, pIoU from per-episode pixel counts
    uncertainty.py              bootstrap intervals of the scores
    manifest.py                 episode manifests: the episodes of a test, written down
    replay.py                   the eval forward replayed as recorded CUDA graphs
    feature_cache.py            backbone features reused across episodes
    paper.py                    the paper's numbers
    report_plot.py              a report as a picture (--plot)
"""
