#!/bin/bash
# Queues a partitioned build: an array of N part tasks, then the merge, which runs only if every task succeeded.
#
#   Pipelines/slurm/submit.sh PIPELINE WORK N [extra sbatch arguments for both jobs, e.g. --partition=cpu]
#
# Prints the two job ids ("ARRAY_ID MERGE_ID"). VLMDATA and VLMDATA_ARGS are passed on (see build-parts.sbatch).
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 PIPELINE WORK N [sbatch arguments...]" >&2
    exit 2
fi
PIPELINE=$1 WORK=$2 N=$3
shift 3
case $N in '' | *[!0-9]* | 0) echo "error: N must be a positive integer, not '$N'" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$WORK"

export PIPELINE WORK VLMDATA_PARTS=$N
array=$(sbatch --parsable --array="0-$((N - 1))" --output="$WORK/part-%a.out" "$@" "$here/build-parts.sbatch")
array=${array%%;*}  # --parsable prints "ID" or "ID;CLUSTER"
merge=$(sbatch --parsable --dependency="afterok:$array" --kill-on-invalid-dep=yes --output="$WORK/merge.out" "$@" \
    "$here/merge.sbatch")
merge=${merge%%;*}
echo "$array $merge"
