"""Replaying a function as a captured CUDA graph: evaluation without launch overhead.

At one episode per call SCCAN's eval forward is launch-bound on a GPU: its ~1,000 small kernels
keep the GPU busy for less than a third of the wall time (H200, 473×473). A CUDA graph records the
kernels of one call and launches them again as one. A graph replays on the memory it was recorded
with, so `Replay` keeps static input buffers per input signature (shapes, dtypes, devices, grad
and inference mode): a call copies its inputs in, replays, and copies the output out. A new
signature records anew (the last few recordings are kept); with `rows_independent`, a batch
smaller than a recorded one is copied into its first rows (the last, partial batch of an
evaluation needs no recording of its own). A recording that fails falls back to calling the
function, with a warning.

The device-specific part is the capture strategy: `capture_cuda_graph` for CUDA inputs; the
default calls the function as it is on any other device, and `call_on_buffers` runs everything
but the graph (buffers, copies, padding, recordings) on any device, which is how the tests check
this plumbing on a CPU.

    forward = replayed_forward(net)                  # SCCAN in eval mode, no autograd
    logits = forward(query, support, support_masks)  # as net(...): B×2×H×W
"""
import collections
import dataclasses
import logging
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import nn

from util.precision import Precision

log = logging.getLogger('sccan')

# A capture strategy: (function, static input buffers) → replay() returning the output tensor
# of function(*buffers), which the next replay may overwrite.
Capture = Callable[[Callable[..., torch.Tensor], Sequence[torch.Tensor]], Callable[[], torch.Tensor]]

WARMUP_CALLS = 2    # before a capture: cuDNN's algorithm search, lazy initialisation


def call_on_buffers(function: Callable[..., torch.Tensor],
                    buffers: Sequence[torch.Tensor]) -> Callable[[], torch.Tensor]:
    """A capture strategy without graphs: each replay calls function(*buffers)."""
    return lambda: function(*buffers)


def capture_cuda_graph(function: Callable[..., torch.Tensor],
                       buffers: Sequence[torch.Tensor]) -> Callable[[], torch.Tensor]:
    """function(*buffers) recorded as a CUDA graph, after warm-up calls on a side stream (as
    PyTorch's CUDA graph notes require), captured on that stream of the buffers' device. Refused
    under an outer autocast: its weight-cast cache would outlive the capture (autocast inside
    `function` is fine).

    Only this thread's CUDA calls are checked during the capture ('thread_local'): a DataLoader's
    pin-memory thread allocates page-locked memory meanwhile, which the default ('global') turns
    into a failed capture here and an error in that thread, ending the evaluation. A capture that
    fails leaves the caller's stream current (PyTorch's context would leave its own)."""
    if torch.is_autocast_enabled():        # CUDA's autocast
        raise RuntimeError('CUDA graphs are not recorded under an outer autocast; give the '
                           'autocast to the recorded function instead')
    device = buffers[0].device
    with torch.cuda.device(device):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                function(*buffers)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        caller_stream = torch.cuda.current_stream()
        try:
            with torch.cuda.graph(graph, stream=side, capture_error_mode='thread_local'):
                output = function(*buffers)
        finally:
            torch.cuda.set_stream(caller_stream)

    def replay():
        with torch.cuda.device(device):
            graph.replay()
        return output
    return replay


@dataclasses.dataclass
class Recording:
    """The static inputs of one signature and the replay that reads them; replay None: the
    function is called directly (its recording failed)."""
    buffers: Sequence[torch.Tensor]
    replay: Optional[Callable[[], torch.Tensor]]

    @property
    def rows(self) -> int:
        return self.buffers[0].shape[0]


class Replay:
    """function(*inputs) → tensor, each call replayed from a recording of its input signature.

    Args:
        function: takes tensors, returns one tensor; it must not read anything that changes
            between calls besides its inputs and what `state` covers (a graph reads memory as
            it was recorded).
        capture: a Capture; None: capture_cuda_graph for CUDA inputs, the plain call elsewhere.
        rows_independent: row i of the output depends on row i of every input only (dim 0 is
            the batch): a smaller batch replays a larger recording in its first rows.
        state: () → a value that changes whenever the recordings become invalid (e.g.
            module_state of the network); checked at each call, all recordings dropped on a
            change.
        keep: recordings kept at most, least recently used dropped first (each holds the
            memory of one call).
    """

    def __init__(self, function: Callable[..., torch.Tensor], capture: Optional[Capture] = None,
                 rows_independent: bool = False, state: Optional[Callable[[], object]] = None,
                 keep: int = 2):
        self.function, self.capture = function, capture
        self.rows_independent, self.state, self.keep = rows_independent, state, keep
        self.recordings = collections.OrderedDict()   # signature → Recording
        self.recorded = 0                             # recordings made so far (for tests, logs)
        self._state = None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.capture is None and inputs[0].device.type != 'cuda':
            return self.function(*inputs)
        if self.state is not None:
            state = self.state()
            if state != self._state:
                self.release()
                self._state = state
        rows = inputs[0].shape[0]
        key = self._signature(inputs)
        recording = self.recordings.get(key)
        if recording is None or recording.rows < rows:
            recording = self._record(key, inputs)
        self.recordings.move_to_end(key)
        if recording.replay is None:
            return self.function(*inputs)
        for buffer, tensor in zip(recording.buffers, inputs):
            buffer[:rows].copy_(tensor, non_blocking=True)
        return recording.replay()[:rows].clone()

    def release(self) -> None:
        """Drop every recording (and the memory it holds); the next call records anew."""
        self.recordings.clear()

    def _signature(self, inputs):
        if self.rows_independent and len({t.shape[0] for t in inputs}) != 1:
            raise ValueError(f'rows_independent inputs need one batch size, got shapes '
                             f'{[tuple(t.shape) for t in inputs]}')
        skip = 1 if self.rows_independent else 0
        return (tuple((tuple(t.shape[skip:]), t.dtype, t.device) for t in inputs),
                torch.is_grad_enabled(), torch.is_inference_mode_enabled(), kernel_choices())

    def _record(self, key, inputs):
        self.recordings.pop(key, None)
        while len(self.recordings) >= self.keep:
            self.recordings.popitem(last=False)
        buffers = [t.clone() for t in inputs]
        capture = self.capture or capture_cuda_graph
        try:
            replay = capture(self.function, buffers)
        except RuntimeError as e:
            log.warning('not recorded (%s): calling the function directly for inputs %s', e,
                        [tuple(t.shape) for t in inputs])
            replay = None
        self.recordings[key] = Recording(buffers, replay)
        self.recorded += 1
        return self.recordings[key]


def kernel_choices() -> Tuple[object, ...]:
    """The process-wide switches that choose the kernels a graph records (TF32 for matrix
    products and convolutions, cuDNN's and PyTorch's deterministic modes): a replay keeps the
    kernels of its recording, so a change of any of them records anew."""
    return (*tf32_switches(), torch.backends.cudnn.deterministic,
            torch.are_deterministic_algorithms_enabled())


def tf32_switches() -> Tuple[object, ...]:
    """TF32's switches for CUDA matrix products and cuDNN convolutions (allow_tf32). From
    PyTorch 2.9 those getters raise once a process has used both of its ways of setting TF32
    (a notebook's own fp32_precision calls); the fp32_precision settings then say it."""
    backends = torch.backends
    try:
        return backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32
    except RuntimeError:
        return (backends.fp32_precision, backends.cuda.matmul.fp32_precision,
                backends.cudnn.fp32_precision, backends.cudnn.conv.fp32_precision)


def module_state(module: nn.Module) -> Tuple[bool, str, Tuple[Tuple[int, int], ...], Tuple[int, ...]]:
    """What a recording of `module` depends on besides its inputs: its mode, fast paths (where
    it has them), where each parameter and buffer lives and its version, and how often its
    submodules dropped what they derive from their weights (`fold_resets`: the backbone's batch
    norm folded into convolutions). Any change (weights loaded, moved, cast or trained) records
    anew: a replay runs none of the Python that would notice, and a moved tensor may sit where a
    freed one sat, at version 0 again."""
    return (module.training, repr(getattr(module, 'fast_paths', None)),
            tuple((t.data_ptr(), t._version) for m in module.modules()
                  for group in (m._parameters, m._buffers) for t in group.values() if t is not None),
            tuple(m.fold_resets for m in module.modules() if hasattr(m, 'fold_resets')))


def replayed(net: nn.Module, function: Callable[..., torch.Tensor],
             capture: Optional[Capture] = None) -> Replay:
    """A Replay of `function`, a part of net's eval forward whose inputs all have one row per
    episode, recorded anew whenever module_state(net) changes."""
    return Replay(function, capture, rows_independent=True, state=lambda: module_state(net))


def replayed_forward(net: nn.Module, autocast_dtype: Optional[torch.dtype] = None,
                     capture: Optional[Capture] = None) -> Replay:
    """net's eval forward, net(query, support, support_masks) → B×2×H×W logits, without
    autograd, on CUDA as a CUDA graph per input shape (a smaller batch reuses a larger one's);
    elsewhere net itself. Puts net in eval mode; changing its weights records anew.

    Args:
        autocast_dtype: run under autocast to this dtype (e.g. torch.bfloat16); None: as is.
    """
    def forward(query, support, support_masks):
        with torch.no_grad(), Precision(query.device.type, autocast_dtype).autocast():
            return net(query, support, support_masks)
    net.eval()
    return replayed(net, forward, capture)
