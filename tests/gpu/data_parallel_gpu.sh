#!/usr/bin/env bash
# A client over two GPUs against one GPU per client (label gpu): the MPI test job with client 0
# data parallel on ranks 0-1 (GPUs 0 and 1; NCCL when the build has it) must compute what the
# same job computes with one rank per client, within float tolerance. Exit 77 (skipped) without
# two CUDA devices.
#   data_parallel_gpu.sh H2TUNE MODEL_DIR WORK_DIR
set -uo pipefail
H2TUNE=$1 MODEL=$2 WORK=$3
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MPIRUN=${MPIEXEC:-mpirun}
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
if [[ ${gpus:-0} -lt 2 ]]; then echo "data_parallel_gpu: fewer than two GPUs: skipped"; exit 77; fi
"$H2TUNE" --version
job=(--config jobs/smoke_federated.ini --force --threads 1 --set "clients.model_dir=$MODEL" --rounds 3)
rm -rf "$WORK"
timeout 600 "$MPIRUN" --oversubscribe -np 4 "$H2TUNE" train "${job[@]}" --output "$WORK/one_rank" || exit 1
timeout 600 "$MPIRUN" --oversubscribe -np 5 "$H2TUNE" train "${job[@]}" --set client.0.ranks_per_client=2 \
  --output "$WORK/data_parallel" || exit 1
/usr/bin/python3 "$HERE/../mpi/compare_data_parallel.py" "$WORK/one_rank" "$WORK/data_parallel" --group-ranks 2,1,1,1 \
  --loss-rtol 1e-3 --adapter-rtol 1e-3 --accuracy-flips 1
