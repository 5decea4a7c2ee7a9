#!/usr/bin/env bash
# Every GPU measurement of the README, in the order they are worth device time, each with its own
# time limit so one stuck part does not take the rest. Run from the repository root on a machine
# with CUDA; logs go to $OUT (or ./gpu-logs). Wheels the machine lacks (nh3 for atlasgen,
# torch-lucent 0.1.8 and kornia 0.4.1 with IPython for the comparison) are installed from .whl/
# if that folder exists.
#
#   bash benchmarks/gpu.sh check lucent dataset torchrun     # ~8 minutes on one H100
#   bash benchmarks/gpu.sh atlas                             # the whole default GoogLeNet atlas
set -u
export PYTHONUNBUFFERED=1
OUT=$(realpath -m "${OUT:-gpu-logs}")
mkdir -p "$OUT"
REPO=$(pwd)
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$REPO
else
  export PYTHONPATH=$REPO
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"

part() {  # part NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "=== $name ($(date +%T), limit ${limit}s): $*"
  local began=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "=== $name: exit $? after $((SECONDS - began)) s"
  grep -v -E "^\s*$|it/s\]|img/s\]" "$OUT/$name.log" | tail -n 40
}

for section in "$@"; do
  case $section in
    check) part check 240 python3 benchmarks/gpu_check.py ;;
    steps) part steps 120 python3 benchmarks/gpu_check.py --parts steps syncs ;;
    profile) part profile 200 python3 benchmarks/gpu_check.py --parts profile ;;
    lucent) part lucent 200 python3 benchmarks/featvis_vs_lucent.py --device cuda:0 --lucent-channels 128 \
              --atlasgen-channels 128 --repeats 2 --lucent-single-channels 2 ;;
    variants) part variants 420 python3 benchmarks/step_variants.py --layers inception3a inception4c inception5b \
                --sizes 64 128 --profile ;;
    parts) part parts 200 python3 benchmarks/gpu_step_parts.py --size 128 ;;
    compiled) part compiled 400 bash -c "python3 benchmarks/compiled_step.py --layer inception4c --size 128; python3 benchmarks/compiled_step.py --layer inception3a --size 64" ;;
    store) part store 200 python3 benchmarks/store_overlap.py --layer inception3b --device cuda ;;
    dataset) part dataset 150 python3 benchmarks/dataset_pass.py --device cuda --images 1000 --batch-size 64 --rounds 2 ;;
    torchrun)
      rm -rf /tmp/ranks && mkdir -p /tmp/ranks && cp atlas.toml /tmp/ranks/
      (cd /tmp/ranks && part torchrun 240 torchrun --standalone --nproc_per_node 2 -m atlasgen build) ;;
    atlas) part atlas "${ATLAS_LIMIT:-3000}" python3 benchmarks/whole_atlas.py --full --images 1000 --device cuda --keep /tmp/atlas ;;
    atlas-start)  # the same in its own session, outliving this command (for runs longer than a call)
      rm -rf /tmp/atlas; echo "=== atlas-start $(date +%T)"
      setsid nohup python3 benchmarks/whole_atlas.py --full --images 1000 --device cuda --keep /tmp/atlas \
        > /tmp/atlas.log 2>&1 < /dev/null & ;;
    atlas-wait)  # until the background atlas ends, or ${WAIT:-540} seconds
      began=$SECONDS
      while pgrep -f whole_atlas.py > /dev/null && [ $((SECONDS - began)) -lt "${WAIT:-540}" ]; do sleep 2; done
      echo "=== atlas-wait $(date +%T): running: $(pgrep -f whole_atlas.py > /dev/null && echo yes || echo no)"
      cp /tmp/atlas.log "$OUT/"; grep -v -E "^\s*$" /tmp/atlas.log | tail -n 45 ;;
    *) echo "unknown section $section" ;;
  esac
done
