#!/bin/bash
# Meta-train SCCAN as a Slurm batch job that survives its time limit: torchrun under srun, one
# torchrun per node starting one process per GPU. Before the time limit Slurm sends SIGUSR1 to
# this script (--signal=B:USR1@180), which passes it on to the training; the training writes its
# latest checkpoint and stops (status 130), and the job requeues itself. Every start of the job,
# the first one or a requeued one, continues the run from its latest checkpoint when it has one
# (train_sccan.py --auto-resume). Submit from the repository root, with the Python environment
# active (sbatch passes it on), and the arguments of train_sccan.py:
#
#   sbatch tools/train_slurm.sh --config config/coco/coco_split0_resnet50.yaml [--opts KEY VALUE ...]
#   sbatch --nodes=2 --time=12:00:00 tools/train_slurm.sh --config ...   # options override these
#
# SIGTERM (scancel, preemption) stops the training the same way without requeueing here: Slurm
# requeues a preempted job of --requeue itself, and a cancelled one stays cancelled. The output
# of every start goes to the same file (--open-mode=append). See docs/training_and_testing.md.
#
#SBATCH --job-name=sccan
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@180
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=sccan-%j.out

cd "${SLURM_SUBMIT_DIR:-.}" || exit 2
if [ "${SLURM_NNODES:-1}" -gt 1 ]; then
    head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    rendezvous=(--nnodes="$SLURM_NNODES" --rdzv-backend=c10d --rdzv-endpoint="$head_node:29500"
                --rdzv-id="$SLURM_JOB_ID")
else
    rendezvous=(--standalone)
fi

requeue=no
step=
pending=
pass_on() {      # a signal for this script goes to the training (srun passes it to torchrun)
    [ "$1" = USR1 ] && requeue=yes
    if [ -n "$step" ]; then kill -s "$1" "$step" 2>/dev/null; else pending=$1; fi
}
trap 'pass_on USR1' USR1
trap 'pass_on TERM' TERM

# torchrun hands SIGUSR1 on to its processes only when told to (torch >= 2.9)
srun torchrun "${rendezvous[@]}" --nproc-per-node="${SLURM_GPUS_ON_NODE:-1}" \
    --signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 \
    train_sccan.py --auto-resume "$@" &
step=$!
# a signal that came before the step's process id was known goes to it now
[ -n "$pending" ] && kill -s "$pending" "$step" 2>/dev/null
# `wait` returns early when a trapped signal arrives: wait again until the step has ended
while wait "$step"; status=$?; kill -0 "$step" 2>/dev/null; do :; done

if [ "$requeue" = yes ]; then
    echo "train_slurm.sh: stopped before the time limit (status $status); requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
