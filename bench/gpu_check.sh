#!/usr/bin/env bash
# The GPU check of issue 16 (bench/gpu_check.py): goldens on CUDA in fp32 and fp16, bench/sadtalker.py
# --device cuda --fp16 --batch 1 4 16, an end-to-end SadTalker + Wav2Lip run on 60 s of speech; fps, peak GPU
# memory and the golden errors. At most 8 minutes (GPU_CHECK_TIMEOUT seconds); everything also goes to a log.
#
#   bench/gpu_check.sh                         # CUDA, log in ./gpu_check-<UTC time>.log
#   GPU_CHECK_LOG=/tmp/g.log bench/gpu_check.sh --skip bench
#   bench/gpu_check.sh --device cpu --quick    # the CPU smoke test (tests/test_gpu_check.py runs it)
#
# Python: $PYTHON, else the repository's venv (.venv or venv), else python3 - it needs torch (a CUDA build on a
# GPU machine) and the package's requirements (install.py --neural). Reference fixtures: $SADTALKER_REFERENCE_DIR,
# else ../shared/reference or ./shared/reference next to the repository. Exit status: the script's (1 when an fp32
# golden fails or a step crashed), 124 when the time limit killed it.
set -u -o pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    for cand in "$repo/.venv/bin/python" "$repo/venv/bin/python"; do
        [ -x "$cand" ] && py="$cand" && break
    done
fi
py="${py:-python3}"
if [ -z "${SADTALKER_REFERENCE_DIR:-}" ]; then
    for cand in "$repo/../shared/reference" "$repo/shared/reference"; do
        [ -d "$cand/goldens" ] && export SADTALKER_REFERENCE_DIR="$(cd "$cand" && pwd)" && break
    done
fi
log="${GPU_CHECK_LOG:-$PWD/gpu_check-$(date -u +%Y%m%dT%H%M%SZ).log}"
limit="${GPU_CHECK_TIMEOUT:-480}"
echo "gpu_check: $py ($("$py" -c 'import sys; print(sys.version.split()[0])' 2>&1)), time limit ${limit} s," \
     "reference ${SADTALKER_REFERENCE_DIR:-<default>}, log $log" | tee "$log"
timeout --signal=TERM --kill-after=15 "$limit" "$py" -u "$repo/bench/gpu_check.py" "$@" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && echo "gpu_check: killed after the ${limit} s time limit" | tee -a "$log"
echo "gpu_check: exit status $rc, log $log" | tee -a "$log"
exit "$rc"
