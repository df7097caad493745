#!/usr/bin/env bash
# Go on with this study where the last session stopped: unpack the carried run (unless runs/ has
# it), then train and evaluate each arm of replicates 1 and 2 in order (finished arms are reused in
# seconds), re-packing partial-run.tar.gz after each arm so that a session cut short keeps every
# finished arm, and at last `heredity run` for summary.json and the report. From the repository
# root:  nohup bash experiments/length_confirm/continue.sh > length_confirm.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/../.."
here=experiments/length_confirm
if [ ! -d runs/length_confirm ]; then mkdir -p runs && tar xzf "$here/partial-run.tar.gz" -C runs; fi
pack() {  # the run without weights or checkpoints (0.5 GB an arm): ~2 MB
    tar czf "$here/partial-run.tar.gz.tmp" -C runs --exclude=model --exclude=checkpoints \
        --exclude=.heredity.lock --exclude='*.linking' length_confirm
    mv "$here/partial-run.tar.gz.tmp" "$here/partial-run.tar.gz"
}
for index in 1 2; do
    for arm in passive active; do
        echo "=== index $index arm $arm: start $(date -u +%H:%M)"
        python "$here/one_arm.py" --index "$index" --arm "$arm"
        pack
        echo "=== index $index arm $arm: done and packed $(date -u +%H:%M)"
    done
done
heredity run "$here/config.yaml" --out runs/length_confirm
echo "=== finished $(date -u +%H:%M): summary.json written; see README.md for what to commit"
