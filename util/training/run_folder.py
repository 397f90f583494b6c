"""Claiming a run folder before anything is written in it."""
import os
import shutil
from typing import List, Optional, Sequence, Tuple

from util.outputs import RunLock, check_outputs, describe
from util.run_paths import RunPaths


def claim_run_folder(paths: RunPaths, resume_path: Optional[str], overwrite: bool,
                     inputs: Sequence[str] = ()) -> Tuple[RunLock, List[str]]:
    """Take the run's lock (held until released), refuse to start over an earlier run's
    checkpoints unless continuing it (resuming from its snapshot folder) or `overwrite` (then
    they go, with its log and TensorBoard scalars, unless one is among the `inputs` the run
    reads, e.g. its backbone_weights), and remove the temporaries of saves that were killed.
    Call it on the main process only.

    Returns:
        (the lock, notes for the log).

    Raises:
        util.outputs.FolderInUse when a live process holds the lock; FileExistsError naming
        the earlier checkpoints and the ways on.
    """
    os.makedirs(paths.run, exist_ok=True)
    lock = RunLock(paths.lock)
    stale = lock.acquire()
    try:
        notes = [f'took over the lock of {describe(stale)}: that process is gone'] if stale else []
        checkpoints = paths.written_checkpoints()
        if checkpoints and not (resume_path is not None and paths.holds(resume_path)):
            if not overwrite:
                names = ', '.join(os.path.basename(p) for p in checkpoints)
                raise FileExistsError(
                    f'{paths.snapshot} holds checkpoints of an earlier run ({names}) that a new '
                    f'run would replace: continue that run with --resume '
                    f'{os.path.basename(checkpoints[-1])}, start over with --overwrite (deletes '
                    'them, its log and TensorBoard scalars), or set another exp_dir')
            check_outputs(checkpoints + paths.records(), inputs, overwrite=True)
            for path in checkpoints + paths.records():
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                notes.append(f'--overwrite: deleted {path} of the earlier run')
        for path in paths.temporaries():
            os.remove(path)
            notes.append(f'removed {path}, left by a checkpoint save that was killed')
    except BaseException:
        lock.release()
        raise
    return lock, notes
