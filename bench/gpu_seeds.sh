#!/usr/bin/env bash
# bench/seeds.py on one GPU with the JAX backend: one process per seed side by side
# (seeds_parallel.sh), sharing one JAX compilation cache, so a refit (and every seed) reuses
# the programs the first run compiled for each image size of progressive resizing.
#
#   BENCH_DATA=DIR bench/gpu_seeds.sh LOG SEED... -- [bench/seeds.py flags]
#   BENCH_DATA=$PWD/photos-112 bench/gpu_seeds.sh runs/gpu-refit.log 1 2 3 -- \
#       --preset resnet-catsdogs --keep-epoch best --refit --out runs/gpu-refit
#
# BENCH_DATA: a folder holding cats_and_dogs/ (bench/photos_at_size.py makes a small copy at
# the preset's size for a machine that cannot be sent the originals). Needs Keras and JAX with
# its CUDA plugin; TensorFlow is not needed.
set -u
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/catsdogs-jax-cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
exec "$(dirname "$0")/seeds_parallel.sh" "$@"
