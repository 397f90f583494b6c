"""Claiming a run folder before anything is written in it."""
import os
import shutil
from typing import List, Optional, Sequence, Tuple

from util.files.checks import check_outputs
from util.files.run_lock import RunLock, describe
from util.files.run_paths import RunPaths


def new_folders(paths: RunPaths) -> List[str]:
    """The folders of a run that do not exist yet, outermost first: its run folder and those
    above it, its snapshot and result folders."""
    missing, folder = [], paths.run
    while folder and not os.path.exists(folder):
        missing.insert(0, folder)
        folder = os.path.dirname(folder)
    return missing + [f for f in (paths.snapshot, paths.result) if f not in missing and
                      not os.path.exists(f)]


def remove_new_folders(paths: RunPaths, folders: Sequence[str]) -> None:
    """Remove the `new_folders` of a run that failed before it began, innermost first, with what
    it wrote there (its log, TensorBoard files; its lock is released by then): a folder of the
    run whole, one above the run folder only when empty (other runs may share it)."""
    for folder in reversed(folders):
        if not os.path.isdir(folder):
            continue
        if folder == paths.run or folder.startswith(paths.run + os.sep):
            shutil.rmtree(folder)
        elif not os.listdir(folder):
            os.rmdir(folder)


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
        util.files.run_lock.FolderInUse when a live process holds the lock; FileExistsError naming
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
                # --resume from another folder starts a run here, as a new one would
                new_run = (f'a run resumed from {resume_path}' if resume_path is not None else
                           'a new run')
                raise FileExistsError(
                    f'{paths.snapshot} holds checkpoints of an earlier run ({names}) that '
                    f'{new_run} would replace: continue that run with --resume '
                    f'{os.path.basename(checkpoints[-1])}, start over with --overwrite (deletes '
                    'them, its log and TensorBoard scalars), or set another exp_dir')
            check_outputs(checkpoints + paths.records(), inputs, overwrite=True)
            for path in checkpoints + paths.records():
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                notes.append(f'replacing the earlier run: deleted {path}')
        for path in paths.temporaries():
            os.remove(path)
            notes.append(f'removed {path}, left by a checkpoint save that was killed')
    except BaseException:
        lock.release()
        raise
    return lock, notes
