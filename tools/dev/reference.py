"""The authors' SCCAN, built from their own code on this CPU-only PyTorch, to produce golden files.

Nothing of theirs is copied into this repository: their code is read at run time from a clone
kept outside it,

    git clone https://github.com/Sam1224/SCCAN /somewhere/outside/this/repo
    export OFFICIAL_SCCAN=/somewhere/outside/this/repo     # the folder holding their model/ and util/

    from tools.dev import reference
    ref = reference.build(layers=50, shot=1)               # their model/SCCAN.py OneModel

Their `model` and `util` packages share names with ours, so they are imported in isolation: while
they load, only OFFICIAL_SCCAN provides those names; afterwards sys.modules and sys.path are as
before and their modules live in `official_modules(root)`. Our `model` can be used in the same
process. Stand-ins replace what their imports need but a CPU-only environment lacks: timm's layers
and the helpers of old torchvision releases (always), the libraries at the top of their
util/util.py where not installed, and the ImageNet weights in initmodel/ (the backbone starts
random; callers load their own). A float64 forward of theirs runs inside
`float_casts_to(torch.float64)` (see there).
"""
import contextlib
import importlib
import importlib.util
import os
import sys
import types
from collections import OrderedDict

import torch
from torch import nn

ENV = 'OFFICIAL_SCCAN'
_CLASHING = ('model', 'util')          # names their tree and ours both provide
MODEL_MODULES = ('model.SCCAN', 'util.util')
# Their test loader (util/dataset.py SemData, util/transform.py, util/config.py). Kept apart from
# MODEL_MODULES: importing their util/transform.py seeds Python's, NumPy's and torch's global
# generators (module level, seed 123).
LOADER_MODULES = ('util.dataset', 'util.transform', 'util.config', 'util.util')
_cache = {}                            # (absolute root, module names) → {module name: their module}


# ---- where their code is ---------------------------------------------------------------------
def official_root(root=None):
    """The folder holding their model/SCCAN.py: `root`, else $OFFICIAL_SCCAN."""
    root = root or os.environ.get(ENV)
    if not root:
        raise RuntimeError(f"{ENV} is not set: git clone https://github.com/Sam1224/SCCAN outside "
                           f"this repository and export {ENV}=<that folder>")
    if not os.path.isfile(os.path.join(root, 'model', 'SCCAN.py')):
        raise RuntimeError(f"{root} does not hold the authors' model/SCCAN.py: point {ENV} at a "
                           f"clone of https://github.com/Sam1224/SCCAN")
    return os.path.abspath(root)


# ---- stand-ins for their imports ---------------------------------------------------------------
class _DropPath(nn.Module):
    """timm's DropPath; their SwinTransformer only builds one for drop_path_rate > 0 and OneModel
    uses 0, so only the identity is needed."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        if drop_prob:
            raise NotImplementedError('the DropPath stand-in only supports drop_prob 0')

    def forward(self, x):
        return x


class _IntermediateLayerGetter(nn.ModuleDict):
    """torchvision's IntermediateLayerGetter: the children of `model` up to the last one named in
    `return_layers`, run in order; forward returns {new name: output} of the named ones."""

    def __init__(self, model, return_layers):
        children = OrderedDict()
        wanted = set(return_layers)
        for name, child in model.named_children():
            if not wanted:
                break
            children[name] = child
            wanted.discard(name)
        super().__init__(children)
        self.return_layers = dict(return_layers)

    def forward(self, x):
        out = OrderedDict()
        for name, child in self.items():
            x = child(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


class _Unused(types.ModuleType):
    """A library their util/util.py imports at the top but nothing used here calls: any attribute
    is None."""

    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return None


def _module(name, **attributes):
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def _stand_ins():
    """{module name: stand-in} for the imports of their model/ and util/util.py."""
    layers = _module('timm.models.layers', DropPath=_DropPath, trunc_normal_=nn.init.trunc_normal_,
                     to_2tuple=lambda x: x if isinstance(x, tuple) else (x, x))
    stand_ins = {
        'timm': _module('timm'), 'timm.models': _module('timm.models', layers=layers),
        'timm.models.layers': layers,
        # Old torchvision paths (their model/backbone_res.py, model/backbone_utils.py).
        'torchvision': _module('torchvision'), 'torchvision.models': _module('torchvision.models'),
        'torchvision.models.utils': _module('torchvision.models.utils',
                                            load_state_dict_from_url=torch.hub.load_state_dict_from_url),
        'torchvision.models._utils': _module('torchvision.models._utils',
                                             IntermediateLayerGetter=_IntermediateLayerGetter),
    }
    # Libraries their util/util.py and util/get_weak_anns.py import at the top (for plots, data,
    # metrics and weak annotations, not for poly_learning_rate, fix_bn or SemData's masks).
    top_level = {'PIL': ('PIL',), 'matplotlib': ('matplotlib', 'matplotlib.pyplot', 'matplotlib.ticker',
                                                 'matplotlib.patches'),
                'seaborn': ('seaborn', 'seaborn.distributions'), 'pandas': ('pandas',),
                'tqdm': ('tqdm',), 'cv2': ('cv2',), 'scipy': ('scipy', 'scipy.ndimage', 'scipy.special'),
                'networkx': ('networkx',), 'skimage': ('skimage', 'skimage.filters', 'skimage.morphology'),
                'sklearn': ('sklearn', 'sklearn.neighbors')}
    for top, names in top_level.items():
        if importlib.util.find_spec(top) is None:     # installed ones are used as they are
            stand_ins.update((name, _Unused(name)) for name in names)
    return stand_ins


# ---- importing their packages in isolation -----------------------------------------------------
def _is_clashing_name(name):
    return name.split('.')[0] in _CLASHING


def _holds_clashing_package(path_entry):
    return any(os.path.isdir(os.path.join(path_entry or '.', name)) for name in _CLASHING)


def official_modules(root=None, names=MODEL_MODULES):
    """{name: module} of their tree: `names` and what they import ('model.SCCAN',
    'model.swin_sccan', 'util.util', ...; with LOADER_MODULES 'util.dataset', ...)."""
    root = official_root(root)
    key = (root, tuple(names))
    if key not in _cache:
        _cache[key] = _import_isolated(root, names)
    return _cache[key]


def _import_isolated(root, names):
    stand_ins = _stand_ins()
    touched = lambda name: _is_clashing_name(name) or name in stand_ins
    saved_modules = {name: m for name, m in sys.modules.items() if touched(name)}
    saved_path, saved_bytecode = list(sys.path), sys.dont_write_bytecode
    for name in saved_modules:
        del sys.modules[name]
    sys.modules.update(stand_ins)
    sys.path[:] = [root] + [p for p in saved_path if not _holds_clashing_package(p)]
    sys.dont_write_bytecode = True          # leave their folder as it is
    try:
        for name in names:
            importlib.import_module(name)
        theirs = {name: m for name, m in sys.modules.items() if _is_clashing_name(name)}
    finally:
        for name in [name for name in sys.modules if touched(name)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path
        sys.dont_write_bytecode = saved_bytecode
    if 'model.backbone_utils' in theirs:
        # No initmodel/ ImageNet weights here: an empty path makes their backbone_res._resnet
        # skip torch.load and keep the random initialisation.
        resnets = theirs['model.backbone_utils'].resnets_dict
        for name, (constructor, _) in list(resnets.items()):
            resnets[name] = (constructor, '')
    return theirs


# ---- their model, optimisers and schedule ------------------------------------------------------
def build(layers=50, shot=1, root=None):
    """Their OneModel (model/SCCAN.py) for PASCAL-style episodes, random backbone weights. Eval:
    model(x, s_x, s_y, None) → logits B×2×H×W; train: model(x, s_x, s_y, y_m) → (prediction,
    main_loss, aux_loss1, aux_loss2)."""
    args = types.SimpleNamespace(layers=layers, shot=shot, zoom_factor=8, vgg=False, data_set='pascal',
                                 ignore_label=255, print_freq=10, low_fea='layer2')
    return official_modules(root)['model.SCCAN'].OneModel(args)


def optimizers(model, base_lr, momentum=0.9, weight_decay=1e-4):
    """(SGD, AdamW) as their train_sccan.get_model makes them: OneModel.get_optim, then
    OneModel.freeze_modules (the backbone gets no gradient)."""
    args = types.SimpleNamespace(momentum=momentum, weight_decay=weight_decay)
    sgd, adamw = model.get_optim(model, args, LR=base_lr)
    model.freeze_modules(model)
    return sgd, adamw


def poly_learning_rate(optimizer, base_lr, iteration, max_iter, power, index_split=-1, root=None):
    """Their util/util.py poly_learning_rate without warmup (the configs' `warmup: False`)."""
    official_modules(root)['util.util'].poly_learning_rate(
        optimizer, base_lr, iteration, max_iter, power=power, index_split=index_split, warmup=False)


def train_mode(model, root=None):
    """model.train() then model.apply(fix_bn), as their train_sccan.train does (`fix_bn: True`).
    Their only BatchNorm layers are the backbone's FrozenBatchNorm2d, which ignore the mode."""
    model.train()
    model.apply(official_modules(root)['util.util'].fix_bn)
    return model


@contextlib.contextmanager
def float_casts_to(dtype):
    """Inside: Tensor.float() converts to `dtype`. Their OneModel.forward casts the support masks
    with .float(), which in a float64 model makes torch.bmm in OneModel.generate_prior fail on
    mixed dtypes; with float64 here the masks are computed in float64 like everything else (their
    loss.weighted_dice_loss casts its 0/1 targets the same way, exactly)."""
    original = torch.Tensor.float
    torch.Tensor.float = lambda self: self.to(dtype)
    try:
        yield
    finally:
        torch.Tensor.float = original
