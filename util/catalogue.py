"""The data sets a config can name (`data_set`), in one table, read by every part that needs
to know one: the config's choices and default test episodes (util.config), the loaders
(util.datasets), the class folds (util.folds), the cross-domain protocol
(util.datasets.cross_domain), the tools that prepare, check, make or tabulate data.

Plain data, importing nothing of the project, so that the config can read it, as detectron2's
DatasetCatalog is read by its config and loaders alike.
"""
import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class DataSet:
    """What the code knows of a data set.

    name: the config's `data_set` value.
    title: its name in tables (tools/reproduce.py).
    test_episodes: the default `test_num`, the episodes of the protocol it is tested with.
    classes: its class count, for the ones split into 4 folds (PASCAL-5i, COCO-20i); None for
        the others, whose classes are those of their files.
    episodes: how its test episodes are drawn: 'folds' (the authors' loader, util.datasets.
        pascal_coco), or PATNet's two ways (util.datasets.patnet): 'query_order' (every image a
        query once, supports from its class) or 'class_cycle' (classes in turn, `test_episodes`
        of them).
    test_only: a benchmark that tests a model meta-trained elsewhere (on PASCAL): any checkpoint
        may be tested on it.
    folder: the download's folder name, where the configs and the test trees look for it.
    preparation: the tool that makes its files ready (None: read as downloaded).
    """
    name: str
    title: str
    test_episodes: int
    episodes: str
    classes: Optional[int] = None
    test_only: bool = False
    folder: Optional[str] = None
    preparation: Optional[str] = None


CATALOGUE = {d.name: d for d in (
    DataSet('pascal', 'PASCAL-5i', 1000, 'folds', classes=20, folder='VOCdevkit2012/VOC2012',
            preparation='tools/prepare_pascal.py'),
    DataSet('coco', 'COCO-20i', 4000, 'folds', classes=80, folder='MSCOCO2014',
            preparation='tools/prepare_coco.py'),
    # PATNet's cross-domain benchmarks (their test.py: FSS-1000 tests each of its 2,400 test
    # images once; the others draw `num=600` episodes, classes in turn)
    DataSet('fss', 'FSS-1000', 2400, 'query_order', test_only=True, folder='FSS-1000'),
    DataSet('deepglobe', 'Deepglobe', 600, 'class_cycle', test_only=True, folder='Deepglobe',
            preparation='tools/prepare_deepglobe.py'),
    DataSet('isic', 'ISIC', 600, 'class_cycle', test_only=True, folder='ISIC',
            preparation='tools/prepare_isic.py'),
    DataSet('lung', 'Chest X-ray', 600, 'class_cycle', test_only=True,
            folder='LungSegmentation'),
    # one's own classes in the FSS-1000 layout, split by tools/split_classes.py
    DataSet('folder', 'own classes', 1000, 'query_order', preparation='tools/split_classes.py'),
)}


def with_episodes(kind: str) -> tuple:
    """The names of the data sets whose episodes are drawn `kind`'s way, in catalogue order."""
    return tuple(name for name, d in CATALOGUE.items() if d.episodes == kind)


def cross_domain_benchmarks() -> tuple:
    """The names of the test-only (cross-domain) benchmarks, in catalogue order."""
    return tuple(name for name, d in CATALOGUE.items() if d.test_only)
