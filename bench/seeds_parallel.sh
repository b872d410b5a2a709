#!/usr/bin/env bash
# bench/seeds.py with one process per seed, side by side (a machine with many cores or one
# large GPU), then one pass over every seed for the table and the ensemble (it reuses the
# finished runs). Every seed holds out the photos of the first seed (--split-seed).
#
#   bench/seeds_parallel.sh LOG SEED... -- [bench/seeds.py flags: --preset, --out, --refit, ...]
#
# With the JAX backend, each process takes the GPU memory it uses (XLA_PYTHON_CLIENT_PREALLOCATE
# false) instead of JAX's 75 % at start, so the processes share one GPU.
set -u
log=$1; shift
seeds=()
while [ "$1" != "--" ]; do seeds+=("$1"); shift; done
shift
here=$(dirname "$0")
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
for seed in "${seeds[@]}"; do
  python3 "$here/seeds.py" --seeds "$seed" --split-seed "${seeds[0]}" "$@" > "$log.seed$seed" 2>&1 &
done
wait
python3 "$here/seeds.py" --seeds "${seeds[@]}" "$@" > "$log" 2>&1
