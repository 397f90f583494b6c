"""Episode lists built from the data: which images a fold uses and, per class, its eligible files.

Building them needs every label of a list file read once. That scan records, per image, the label
size and the pixel count of every class present; it is cached as JSON (lists/<data_set>/
class_pixels/<list name>-<root digest>.json by default) and rebuilt when the list's content, the data root,
any label file (size or modification time), the data set or the cache format change. The
fold- and mode-specific lists are derived from it in memory, so one scan serves all four folds,
both modes and any eligibility threshold.

Rules (the authors' make_dataset): an (image, class) pair is eligible when the class covers at
least MIN_PIXELS = 2·32·32 pixels of the original label; training lists drop every image that
contains any novel class (any pixel of it), validation lists keep them.
"""
import hashlib
import logging
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from util.cli import TOOLS
from util.files.checks import InputFiles, read_keyed
from util.files.image_io import check_label_values, read_label
from util.files.inputs import read_text, require_file
from util.files.writer import write_json
from util.folds import num_classes
from util.log import progress_map

log = logging.getLogger('sccan')

MIN_PIXELS = 2 * 32 * 32
CACHE_FORMAT = 1
# Testing scores the first test_num queries of the val list in list order (the authors'
# test_sccan.py, validate: their loader does not shuffle), so a COCO val list in another order
# tests other images (4,000 episodes of 40,137 images). The sha1 of the image file names, one per
# line, of the authors' lists/coco/val.txt (github.com/Sam1224/SCCAN):
AUTHORS_VAL_ORDER = {'coco': '7b6010e06a622421338461125034bf58e63cb12b'}
REPO_LISTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'lists')


def read_list(data_list: str) -> list[tuple[str, str]]:
    """[(image_rel, label_rel), ...] of a list file with lines "image label" (paths relative to
    the data root), duplicates dropped, first occurrence kept; blank lines and `# comment`
    lines are skipped."""
    pairs = []
    for number, line in enumerate(read_text(data_list, 'list file').splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith('#'):
            continue
        if len(fields) != 2:
            raise ValueError(f'{data_list}:{number}: expected "image_path label_path", '
                             f'got {line.strip()!r}')
        pairs.append(tuple(fields))
    if not pairs:
        raise ValueError(f'list file is empty: {data_list}')
    unique = list(dict.fromkeys(pairs))
    if len(unique) < len(pairs):
        log.info('%s: %d duplicate lines ignored', data_list, len(pairs) - len(unique))
    return unique


def image_order(pairs: Iterable[tuple[str, str]]) -> str:
    """sha1 of the image file names of a list's (image, label) pairs, in order (path prefixes
    do not count)."""
    names = '\n'.join(os.path.basename(image) for image, _ in pairs)
    return hashlib.sha1(names.encode()).hexdigest()


def check_val_order(data_set: str, data_list: str, pairs: Iterable[tuple[str, str]]) -> None:
    """Warn when a val list whose order the paper's numbers depend on is not in the authors'
    order."""
    known = AUTHORS_VAL_ORDER.get(data_set)
    if known and image_order(pairs) != known:
        log.warning("%s: its images are not in the order of the authors' lists/%s/val.txt; the "
                    'first test_num episodes query other images than theirs, so scores are not '
                    'comparable with the paper (%s --order-from <their val.txt> writes their '
                    'order; docs/data.md, COCO-20i)', data_list, data_set, TOOLS['prepare_coco'])


def scan_pair(data_root: str, pair: tuple[str, str], classes: int) -> dict[str, list]:
    """{'size': [h, w], 'pixels': [[class, count], ...]} of one list entry. Raises for a missing
    image, an unreadable label or label values outside 0..classes and 255."""
    image_path, label_path = (os.path.join(data_root, p) for p in pair)
    require_file(image_path, 'image')
    label = read_label(label_path)
    check_label_values(label, label_path, classes)
    counts = np.bincount(label.ravel(), minlength=256)
    pixels = [[int(c), int(counts[c])] for c in np.flatnonzero(counts[1:classes + 1]) + 1]
    return {'size': list(label.shape), 'pixels': pixels}


def scan_labels(data_root: str, pairs: Sequence[tuple[str, str]], classes: int, skip_bad_files: bool = False,
                desc: str = 'scanning labels') -> list[dict[str, list | str]]:
    """Records of scan_pair for all pairs, read by a few threads (decoding releases the GIL).
    A bad file raises, or with skip_bad_files gives {'error': message}."""
    def scan(pair):
        try:
            return scan_pair(data_root, pair, classes)
        except (OSError, ValueError) as e:
            if not skip_bad_files:
                raise
            return {'error': f'{type(e).__name__}: {e}'}

    return progress_map(scan, pairs, min(8, os.cpu_count() or 1), desc=desc, unit='label',
                        enabled=len(pairs) >= 500)


def cache_path(data_set: str, data_root: str, data_list: str, cache_dir: str | None = None) -> str:
    """One cache file per list and data root, so datasets with equal list names do not
    overwrite each other's scan."""
    stem = os.path.splitext(os.path.basename(data_list))[0]
    root = hashlib.sha1(os.path.realpath(data_root).encode()).hexdigest()[:8]
    return os.path.join(cache_dir or REPO_LISTS, data_set, 'class_pixels', f'{stem}-{root}.json')


def list_inputs(data_set: str, data_root: str, data_list: str, pairs: Iterable[tuple[str, str]],
                cache_dir: str | None = None) -> InputFiles:
    """The files a list makes a run read: the list, its scan cache (cache_path) and every image
    and label it names (`pairs`, relative to data_root), as util.files.checks.InputFiles."""
    inputs = InputFiles([data_list, cache_path(data_set, data_root, data_list, cache_dir)])
    return inputs.add((os.path.join(data_root, p) for pair in pairs for p in pair),
                      follow_links=False)


def labels_signature(data_root: str, pairs: Iterable[tuple[str, str]]) -> str:
    """A digest of every label file's size and modification time: regenerated labels under an
    unchanged list make the cache stale. Missing files count as absent, not as errors, here."""
    digest = hashlib.sha1()
    for _, label in pairs:
        try:
            stat = os.stat(os.path.join(data_root, label))
            digest.update(f'{stat.st_size}:{stat.st_mtime_ns};'.encode())
        except OSError:
            digest.update(b'missing;')
    return digest.hexdigest()


def cache_key(data_set: str, data_root: str, data_list: str,
              pairs: Iterable[tuple[str, str]]) -> dict[str, str | int]:
    """What the scan depends on: the list's content, the labels under the data root (whose path
    is in the cache's file name), the data set (its class range) and the cache format."""
    with open(data_list, 'rb') as f:
        digest = hashlib.sha1(f.read()).hexdigest()
    return {'data_set': data_set, 'list_sha1': digest, 'labels': labels_signature(data_root, pairs),
            'format': CACHE_FORMAT}


def class_pixels(data_set: str, data_root: str, data_list: str, cache_dir: str | None = None,
                 skip_bad_files: bool = False) -> tuple[list[tuple[str, str]], list[dict[str, list | str]]]:
    """(pairs, records): the list's (image, label) pairs (relative paths) and their scan records,
    from the cache when it is up to date, else scanned and cached. Records with an 'error'
    (only with skip_bad_files) are scanned again next time."""
    if not os.path.isdir(data_root):
        raise FileNotFoundError(f'data root not found: {data_root}')
    pairs = read_list(data_list)
    classes = num_classes(data_set)
    path = cache_path(data_set, data_root, data_list, cache_dir)
    key = cache_key(data_set, data_root, data_list, pairs)
    records = load_cache(path, key, len(pairs))
    if records is None:
        log.info('building the class lists of %s (cached in %s)', data_list, path)
        records = scan_labels(data_root, pairs, classes, skip_bad_files,
                              desc=f'scanning {os.path.basename(data_list)}')
        save_cache(path, key, records)
        return pairs, records
    retry = [i for i, r in enumerate(records) if 'error' in r]
    if retry:
        for i, record in zip(retry, scan_labels(data_root, [pairs[i] for i in retry], classes,
                                                skip_bad_files)):
            records[i] = record
        save_cache(path, key, records)
    return pairs, records


def load_cache(path: str, key: Mapping[str, str | int], count: int) -> list[dict[str, list | str]] | None:
    """The `count` cached records, or None when the file is absent, unreadable, stale or not
    what save_cache writes (e.g. edited by hand)."""
    content = read_keyed(path, 'key', key)
    if content is None:
        if os.path.exists(path):
            log.info('%s is stale (its list, data root, labels or format changed): rebuilding', path)
        return None
    records = content.get('records')
    if not (isinstance(records, list) and len(records) == count and
            all(_is_record(r) for r in records)):
        log.warning('%s does not hold the records of its list: rebuilding', path)
        return None
    return records


def _is_record(record):
    """Whether `record` is what scan_pair (or a skipped bad file) gives: a size of two positive
    integers and [class, count] pairs of positive integers, or an error message. Anything else
    (e.g. a count written as a string) would silently drop its image from the lists."""
    if not isinstance(record, dict):
        return False
    if record.keys() == {'error'}:
        return isinstance(record['error'], str)
    size, pixels = record.get('size'), record.get('pixels')
    return (record.keys() == {'size', 'pixels'} and isinstance(size, list) and len(size) == 2
            and isinstance(pixels, list) and all(isinstance(p, list) and len(p) == 2 for p in pixels)
            and all(_positive_int(n) for n in size + [n for p in pixels for n in p]))


def _positive_int(value):
    return type(value) is int and value > 0


def save_cache(path: str, key: Mapping[str, str | int], records: Sequence[dict[str, list | str]]) -> None:
    """Write the cache atomically (several processes may build the same one). A cache that
    cannot be written (a full disk, a read-only lists folder) is only a warning: the records
    are in memory, and the next run scans again."""
    try:
        write_json(path, {'key': key, 'records': records}, compact=True)
    except OSError as e:
        log.warning('%s: the list scan is not cached (set list_dir to a writable folder); the '
                    'next run scans the labels again', e)


def fold_lists(pairs: Sequence[tuple[str, str]], records: Sequence[dict[str, list | str]],
               classes: Sequence[int], novel: Iterable[int], mode: str, min_pixels: int = MIN_PIXELS
               ) -> tuple[list[tuple[tuple[str, str], list[int], list[int]]],
                          dict[int, list[tuple[str, str]]], list[tuple[int, int]]]:
    """The episode lists of one fold and mode.
    classes: the classes episodes are drawn from (base for train, novel for val).
    Returns (queries, class_files, sizes): queries = [(pair, eligible classes, present
    classes)] for every image with at least one eligible class; class_files = {class: [pair]};
    sizes = label (h, w) per query."""
    queries, sizes = [], []
    class_files = {c: [] for c in classes}
    wanted, novel = set(classes), set(novel)
    for pair, record in zip(pairs, records):
        if 'error' in record:
            continue
        pixels = dict(record['pixels'])
        if mode == 'train' and novel & pixels.keys():
            continue
        eligible = [c for c in classes if pixels.get(c, 0) >= min_pixels]
        if not eligible:
            continue
        present = sorted(wanted & pixels.keys())
        queries.append((pair, eligible, present))
        sizes.append(tuple(record['size']))
        for c in eligible:
            class_files[c].append(pair)
    return queries, class_files, sizes
