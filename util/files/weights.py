"""The weights a user downloads, found, checked and put where the configs look for them.

What the authors' README (github.com/Sam1224/SCCAN, "Models") links, and what SCCAN reads of it:
  - the pre-trained backbones: PSPNet's ImageNet ResNets ("v2", deep stem), of which SCCAN loads
    initmodel/resnet50_v2.pth and initmodel/resnet101_v2.pth (BACKBONES; the configs'
    `backbone_weights`);
  - exp.zip: the meta-trained SCCAN checkpoints for PASCAL-5i and COCO-20i, laid out as their
    train_sccan.py writes them (RELEASED): exp/<data_set>/SCCAN/split<k>/resnet<L>/snapshot/
    <name>.pth, 5-shot ones named train5_... (the configs' `weight` names one per config).

A source is a zip archive, a folder or a .pth file. `find_weights` lists the weights files it
holds and where each belongs; `install` checks one (it must load into the model it is for) before
it goes into place, and never replaces a different file unless asked; `fitting_configs` says
which configs use a checkpoint.
"""
import contextlib
import dataclasses
import glob
import hashlib
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from typing import BinaryIO, Callable, Iterator, List, Optional, Sequence, Tuple

from model import build_sccan, load_backbone_weights, sccan_from_checkpoint
from model.build import MODEL_VARIANTS
from model.checkpoint import CheckpointError, metadata
from util.config import REPO_ROOT, load_config
from util.files.run_paths import RunPaths, shot_in_name
from util.files.writer import make_folder, write_atomic

BACKBONES = {'resnet50_v2.pth': 50, 'resnet101_v2.pth': 101}
# A checkpoint where the authors' code writes it, below any folder (their exp.zip starts at exp/).
RELEASED = re.compile(r'(?:^|/)(?P<run>[^/]+/SCCAN/split\d+/resnet(?P<layers>\d+))/snapshot/'
                      r'(?P<name>[^/]+\.pth)$')
# What archivers add beside the files (macOS: __MACOSX/ copies of resource forks, ._ files).
_CLUTTER = re.compile(r'(?:^|/)(?:__MACOSX/|\._[^/]*$)')
CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """One weights file of a source and where it belongs."""
    shown: str                 # how messages name it: 'exp.zip:exp/pascal/.../x.pth' or its path
    destination: str           # where the configs look for it
    layers: int                # the ResNet depth its path or name says
    backbone: bool             # an ImageNet backbone (else a meta-trained SCCAN checkpoint)
    archive: Optional[str]     # the zip archive holding it; None for a file on disk
    member: str                # its name in the archive, or its path

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """Its bytes, as a binary file object; a member found corrupt while it is read is a
        ValueError naming it."""
        if self.archive is None:
            with open(self.member, 'rb') as f:
                yield f
            return
        try:
            with zipfile.ZipFile(self.archive) as z, z.open(self.member) as f:
                yield f
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise ValueError(f'{self.shown}: damaged in its archive (an incomplete download?): '
                             f'{e}') from e


def placed(relative: str, exp_root: str, initmodel: str) -> Optional[Tuple[str, int, bool]]:
    """(destination, layers, is a backbone) of a weights file found at `relative` (a path inside
    a source), or None when it is neither a backbone nor a checkpoint in the authors' layout."""
    relative = relative.replace(os.sep, '/')
    if _CLUTTER.search(relative):
        return None
    name = relative.rsplit('/', 1)[-1]
    if name in BACKBONES:
        return os.path.join(initmodel, name), BACKBONES[name], True
    m = RELEASED.search(relative)
    if m:
        return (os.path.join(exp_root, *m.group('run').split('/'), 'snapshot', m.group('name')),
                int(m.group('layers')), False)
    return None


def find_weights(source: str, exp_root: str, initmodel: str) -> Tuple[List[WeightsFile], int]:
    """The weights files of a source (a zip archive, a folder or a .pth file) and the number of
    its other files (not needed: logs, other backbones); ValueError when it holds none."""
    if os.path.isdir(source):
        entries = [os.path.relpath(p, source) for p in sorted(glob.glob(
            os.path.join(glob.escape(source), '**', '*'), recursive=True)) if os.path.isfile(p)]
        archive = None
    elif not os.path.exists(source):
        raise FileNotFoundError(f'{source} not found')
    elif source.endswith('.pth'):       # before the zip test: torch.save writes zip archives too
        entries, archive = [os.path.abspath(source)], None
    elif zipfile.is_zipfile(source):
        try:
            with zipfile.ZipFile(source) as z:
                entries = [n for n in z.namelist() if not n.endswith('/')]
        except (zipfile.BadZipFile, OSError) as e:
            raise ValueError(f'{source}: not a readable zip archive (truncated download?): {e}') from e
        archive = source
    elif source.endswith('.zip'):
        raise ValueError(f'{source}: not a complete zip archive (an incomplete download, or a web '
                         'page saved under its name?)')
    else:
        raise ValueError(f'{source}: expected a zip archive (the authors\' exp.zip or their '
                         'backbones), a folder or a .pth file')
    found = []
    for entry in entries:
        where = placed(entry, exp_root, initmodel)
        if where:
            path = entry if archive or os.path.isabs(entry) else os.path.join(source, entry)
            shown = f'{source}:{entry}' if archive else path
            found.append(WeightsFile(shown, *where, archive, path))
    if not found:
        raise ValueError(
            f'{source} holds no SCCAN checkpoint in the authors\' layout (<data_set>/SCCAN/'
            f'split<k>/resnet<L>/snapshot/*.pth, as in their exp.zip) and no backbone '
            f'({", ".join(BACKBONES)}): is it the file the authors\' README links?')
    return found, len(entries) - len(found)


def in_place(exp_root: str, initmodel: str) -> List[WeightsFile]:
    """The weights files already where the configs look: checkpoints in the authors' layout
    below exp_root, backbones in initmodel."""
    found = []
    for root in (exp_root, initmodel):
        if os.path.isdir(root):
            with contextlib.suppress(ValueError):
                found += [f for f in find_weights(root, exp_root, initmodel)[0]
                          if same_path(f.member, f.destination)]
    return found


def same_path(a: str, b: str) -> bool:
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def sha256(stream: BinaryIO, copy_to: Optional[BinaryIO] = None) -> str:
    """The SHA-256 of what is left in `stream` (hex), read in chunks and, with `copy_to`, copied
    there on the way."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(CHUNK), b''):
        digest.update(chunk)
        if copy_to is not None:
            copy_to.write(chunk)
    return digest.hexdigest()


def sha256_of(weights: WeightsFile) -> str:
    with weights.open() as f:
        return sha256(f)


def sha256_of_file(path: str) -> str:
    with open(path, 'rb') as f:
        return sha256(f)


def variant_of(architecture: dict) -> str:
    """The model variant (model.build.MODEL_VARIANTS) an architecture is, its backbone depth
    aside; 'custom' for another."""
    return next((name for name, variant in MODEL_VARIANTS.items()
                 if {**variant, 'layers': architecture['layers']} == architecture), 'custom')


def check(path: str, weights: WeightsFile) -> Tuple[str, Optional[int]]:
    """Load the file at `path` into the model `weights` is for, strictly (model.checkpoint:
    every key and shape, finite values); (what it is, its number of shots when known), or the
    loader's error with `weights.shown` in place of `path`."""
    try:
        if weights.backbone:
            load_backbone_weights(build_sccan(layers=weights.layers), path)
            return f'ImageNet ResNet-{weights.layers} backbone', None
        net, checkpoint = sccan_from_checkpoint(path)
    except (ValueError, OSError) as e:
        raise type(e)(str(e).replace(path, weights.shown)) from None
    if net.architecture['layers'] != weights.layers:
        raise CheckpointError(f'{weights.shown} holds a ResNet-{net.architecture["layers"]} SCCAN '
                              f'but its path says resnet{weights.layers}, where the configs of '
                              f'ResNet-{weights.layers} would read it: is it in the right folder?')
    shot = metadata(checkpoint).get('shot') or shot_in_name(os.path.basename(weights.destination))
    variant = variant_of(net.architecture)
    what = f'ResNet-{weights.layers} SCCAN' + ('' if variant == 'paper' else f' (model {variant})')
    return what + (f', {shot}-shot' if shot else ', shots unknown'), shot


@dataclasses.dataclass
class Installed:
    """What `install` did with one weights file."""
    weights: WeightsFile
    status: str        # 'placed', 'replaced', 'in place' (the same bytes were there), 'checked'
    sha256: str
    what: str          # e.g. 'ResNet-50 SCCAN, 1-shot'
    shot: Optional[int]


def conflicts(found: Sequence[WeightsFile], overwrite: bool) -> List[str]:
    """Why some of `found` cannot go into place (checked before anything is written): two
    sources for one destination, or a different file there already (unless `overwrite`)."""
    problems, seen = [], {}
    for weights in found:
        other = seen.setdefault(os.path.realpath(weights.destination), weights)
        if other is not weights:
            problems.append(f'{weights.shown} and {other.shown} both belong at {weights.destination}')
        elif (os.path.exists(weights.destination) and not overwrite
              and not same_path(weights.member, weights.destination)
              and sha256_of_file(weights.destination) != sha256_of(weights)):
            problems.append(f'{weights.destination} exists already and differs from '
                            f'{weights.shown}; pass --overwrite to replace it')
    return problems


def install(weights: WeightsFile, staging: Callable[[], str]) -> Installed:
    """Check `weights` and put it at its destination: copied first into `staging()` (a folder on
    the destination's file system), loaded from there, then moved into place in one rename, so that
    a file failing its check is never placed. A file already at its destination with the same
    bytes is checked where it lies."""
    if same_path(weights.member, weights.destination):
        return Installed(weights, 'checked', sha256_of(weights),
                         *check(weights.destination, weights))
    existed = os.path.exists(weights.destination)
    if existed:
        digest = sha256_of(weights)
        if sha256_of_file(weights.destination) == digest:
            return Installed(weights, 'in place', digest, *check(weights.destination, weights))
    digests = []

    def copy(f):
        with weights.open() as source:
            digests.append(sha256(source, copy_to=f))
    staged = write_atomic(os.path.join(staging(), os.path.basename(weights.destination)), copy)
    what, shot = check(staged, weights)
    make_folder(os.path.dirname(weights.destination))
    os.replace(staged, weights.destination)
    return Installed(weights, 'replaced' if existed else 'placed', digests[0], what, shot)


@contextlib.contextmanager
def staging_folder(root: str) -> Iterator[str]:
    """A temporary folder below `root` (so that moving a file from it into place is one rename),
    removed afterwards."""
    make_folder(root)
    folder = tempfile.mkdtemp(prefix='.weights-', dir=root)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def rebased(path: Optional[str], folder: str, root: str) -> Optional[str]:
    """`path` moved from below the repository's `folder` (exp, initmodel) to below `root`;
    other paths as they are."""
    default = os.path.join(REPO_ROOT, folder)
    if path and os.path.commonpath([os.path.abspath(path), default]) == default:
        return os.path.join(root, os.path.relpath(path, default))
    return path


def load_configs(config_dir: str, exp_root: str, initmodel: str) -> list:
    """(path, config) of every config below config_dir, their outputs (exp_dir) and backbones
    looked for below exp_root and initmodel instead of the repository's exp/ and initmodel/."""
    configs = []
    pattern = os.path.join(glob.escape(config_dir), '**', '*.yaml')
    for path in sorted(glob.glob(pattern, recursive=True)):
        cfg = load_config(path)
        configs.append((path, cfg.replace(
            exp_dir=rebased(cfg.exp_dir, 'exp', exp_root),
            backbone_weights=rebased(cfg.backbone_weights, 'initmodel', initmodel))))
    return configs


def fitting_configs(installed: Installed, configs: list) -> List[str]:
    """The configs that use an installed file: for a checkpoint those whose run folder holds it
    and whose shot it has ('(its weight)' when the config's `weight` names it: test_sccan.py
    --config tests it by default); for a backbone those whose backbone_weights it is."""
    weights = installed.weights
    folder, name = os.path.split(weights.destination)
    fits = []
    for path, cfg in configs:
        if weights.backbone:
            if cfg.backbone_weights and same_path(cfg.backbone_weights, weights.destination):
                fits.append(path)
        elif (os.path.realpath(RunPaths.of(cfg).snapshot) == os.path.realpath(folder)
              and installed.shot in (None, cfg.shot)):
            fits.append(path + (' (its weight)' if cfg.weight == name else ''))
    return fits
