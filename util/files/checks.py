"""What the scripts may write: never one of their inputs, --overwrite or not (InputFiles,
check_outputs), never a file they did not create unless asked (--overwrite), never two outputs
to one file (check_outputs, unique_stems); and JSON caches read back only when they answer the
same question (read_keyed)."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any, Self


def _same_file(a, b):
    return os.path.realpath(a) == os.path.realpath(b) or (
        os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b))


class InputFiles:
    """The files a run reads (lists, images, labels, list caches, checkpoints, configs,
    manifests): no output may replace one, --overwrite or not. Indexed by file name, so that an
    output is compared with the few inputs of its name only, however many files a data set
    lists.

        inputs = InputFiles([checkpoint, cfg.source]).add(dataset.input_files())
        check_outputs([report], inputs, overwrite=True)
    """

    def __init__(self, paths: Iterable[str | os.PathLike[str]] | InputFiles = ()):
        self._by_name = {}
        self.add(paths)

    def add(self, paths: Iterable[str | os.PathLike[str]] | InputFiles, follow_links: bool = True) -> Self:
        """Add files (or another InputFiles); returns self.

        Args:
            paths: file paths, or an InputFiles.
            follow_links: also find each file under the name it links to. False for the many
                files of a data set's lists (resolving 100,000 paths takes seconds): a file is
                found by its own name then, and through links to folders.
        """
        if isinstance(paths, InputFiles):
            for name, sources in paths._by_name.items():
                self._by_name.setdefault(name, []).extend(sources)
            return self
        for path in paths:
            path = os.fspath(path)
            names = {os.path.basename(path)}
            if follow_links:
                names.add(os.path.basename(os.path.realpath(path)))
            for name in names:
                self._by_name.setdefault(name, []).append(path)
        return self

    def find(self, path: str, real_path: str | None = None) -> str | None:
        """The input that writing `path` would replace (the same file, through links or another
        spelling of its path), or None. real_path: os.path.realpath(path), when known."""
        names = {os.path.basename(path), os.path.basename(real_path or os.path.realpath(path))}
        for name in names:
            for source in self._by_name.get(name, ()):
                if _same_file(path, source):
                    return source
        return None


def check_outputs(outputs: Iterable[str], inputs: InputFiles | Iterable[str | os.PathLike[str]] = (),
                  overwrite: bool = False) -> None:
    """Refuse, before anything is written, an output that is also an input (the same file after
    resolving links: never allowed, --overwrite or not), that two outputs share, or that exists
    already (allowed with `overwrite`).

    Args:
        outputs: the files the run will write.
        inputs: an InputFiles, or the paths of the files the run reads.
        overwrite: whether existing outputs may be replaced.
    """
    inputs = inputs if isinstance(inputs, InputFiles) else InputFiles(inputs)
    claimed = set()
    for path in outputs:
        real_path = os.path.realpath(path)
        source = inputs.find(path, real_path)
        if source is not None:
            raise ValueError(f'output {path} would overwrite the input {source}; write the '
                             'outputs elsewhere')
        identity = _identity(path, real_path)
        if identity & claimed:
            raise ValueError(f'two outputs of this run would both be written to {path}')
        claimed |= identity
        if os.path.lexists(path) and not overwrite:
            raise FileExistsError(f'{path} exists already; pass --overwrite to replace it, or '
                                  'write elsewhere')


def _identity(path, real_path):
    """What tells a file apart: its real path and, when it exists, its device and inode (a hard
    link)."""
    try:
        stat = os.stat(path)
    except OSError:
        return {real_path}
    return {real_path, (stat.st_dev, stat.st_ino)}


def unique_stems(paths: Iterable[str]) -> list[str]:
    """The file names of `paths` without their extensions, made unique for outputs named after
    them: a name shared by several files goes to the first, the others get the first free
    `_1`, `_2`, ... that no file of `paths` has as its own name (a/x.jpg, b/x.jpg, x_1.jpg →
    x, x_2, x_1)."""
    stems = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    taken, names = set(stems), []
    for stem in stems:
        name, n = stem, 0
        while name in names or (name != stem and name in taken):
            n += 1
            name = f'{stem}_{n}'
        names.append(name)
    return names


def read_keyed(path: str, key_name: str, key: object) -> dict[str, Any] | None:
    """The JSON object stored at `path` when its `key_name` entry equals `key`; None when the
    file is absent, unreadable, of another shape or made for another key."""
    content = read_record(path)
    return content if content.get(key_name) == key else None


def read_record(path: str) -> dict[str, Any]:
    """The JSON object stored at `path`; {} when the file is absent, unreadable or not an
    object."""
    try:
        with open(path) as f:
            record = json.load(f)
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}
