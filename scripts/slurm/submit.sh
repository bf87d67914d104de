#!/usr/bin/env bash
# Index a folder on a Slurm cluster: an array job of N shards, then a merge job that
# runs once every shard has finished (--dependency=afterok). Prints the two job ids.
#
#   scripts/slurm/submit.sh DIR OUT.db [--shards N] [--neurodex PATH]
#                           [--sbatch "ARGS"] [--rerun I[,J...]] [-- INDEX_ARGS...]
#
# The shards go to OUT.db.shards/shard-I-of-N.db, the logs to OUT.db.shards/logs/,
# the merged index to OUT.db. DIR, OUT.db and neurodex must be reachable at the same
# paths from every node (a shared filesystem). --sbatch passes options to both jobs
# (e.g. "--partition=cpu --time=02:00:00"); INDEX_ARGS go to every `neurodex index`
# (e.g. --model resnet18 --weights /shared/resnet18.pth --layers layer3,layer4).
# --rerun runs only the shards named (a failed task: it resumes) and the merge after
# them, with the same N and arguments as the first submission.
set -euo pipefail
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
dir=$1 out=$2
shift 2
shards=8 neurodex=$(command -v neurodex || true) sbatch_args="" index_args=() tasks=""
while [ $# -gt 0 ]; do
    case $1 in
        --shards) shards=$2; shift 2 ;;
        --neurodex) neurodex=$2; shift 2 ;;
        --sbatch) sbatch_args=$2; shift 2 ;;
        --rerun) tasks=$2; shift 2 ;;
        --) shift; index_args=("$@"); break ;;
        *) usage ;;
    esac
done
[ -n "$neurodex" ] || { echo "submit.sh: neurodex is not on PATH; give --neurodex PATH" >&2; exit 2; }
[ -d "$dir" ] || { echo "submit.sh: $dir: not a directory" >&2; exit 2; }
[[ $shards =~ ^[1-9][0-9]*$ ]] || { echo "submit.sh: --shards takes a count, not $shards" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
neurodex=$(realpath "$neurodex")
dir=$(realpath "$dir")
out=$(realpath -m "$out")
shard_dir="$out.shards"
mkdir -p "$shard_dir/logs"
export NEURODEX="$neurodex" DIR="$dir" SHARDS="$shard_dir" OUT="$out" COUNT="$shards"
# Shell-quoted, for index-shard.sbatch to read back word for word (paths with spaces).
INDEX_ARGS=""
[ ${#index_args[@]} -eq 0 ] || INDEX_ARGS=$(printf '%q ' "${index_args[@]}")
export INDEX_ARGS
# shellcheck disable=SC2086  # sbatch_args is a list of words
array=$(sbatch --parsable --export=ALL --array="${tasks:-0-$((shards - 1))}" \
    --output="$shard_dir/logs/index-%a.out" $sbatch_args "$here/index-shard.sbatch")
array=${array%%;*}
# A rerun's merge also waits for the first submission's tasks still in the queue.
after="afterok:$array"
if [ -n "$tasks" ] && [ -f "$shard_dir/jobs" ]; then
    read -r first _ < "$shard_dir/jobs"
    if [ -n "$(squeue -h -j "$first" 2>/dev/null)" ]; then after="$after,afterany:$first"; fi
fi
# shellcheck disable=SC2086
merge=$(sbatch --parsable --export=ALL --dependency="$after" --kill-on-invalid-dep=yes \
    --output="$shard_dir/logs/merge.out" $sbatch_args "$here/merge.sbatch")
merge=${merge%%;*}
cat <<MSG
index array: job $array ($shards tasks), shards in $shard_dir
merge:       job $merge (after all of $array succeed) into $out
logs:        $shard_dir/logs/
watch:       squeue -j $array,$merge
a failed shard: read its log, then rerun it (it resumes) and the merge after it:
  $(printf '%q ' "$here/submit.sh" "$dir" "$out" --shards "$shards" --neurodex "$neurodex")${sbatch_args:+--sbatch $(printf %q "$sbatch_args") }--rerun I${INDEX_ARGS:+ -- $INDEX_ARGS}
MSG
# The first submission's array stays first: a rerun's merge waits for what is left of it.
if [ -n "$tasks" ] && [ -f "$shard_dir/jobs" ]; then
    read -r first _ < "$shard_dir/jobs"
    echo "$first $array $merge" > "$shard_dir/jobs"
else
    echo "$array $merge" > "$shard_dir/jobs"
fi
