#!/usr/bin/env bash
# Mutation testing (cosmic-ray) of the modules that assemble the networks' inputs and the lite motion,
# each against the tests that cover it. Not part of CI: the full run takes hours on 2 cores.
#
#   bench/mutation.sh                       # all modules below
#   bench/mutation.sh options               # one (names: stage sadtalker lite motion options)
#
# Works on a copy of the tracked files in $MUTATION_DIR (default: a new /tmp/mutation.XXXX), so the
# checkout is never mutated; cosmic-ray 8.7.0 is installed there too (pip --target), not into the venv.
# Needs the reference fixtures (SADTALKER_REFERENCE_DIR, default ../shared/reference) and the synthetic
# checkpoints (SADTALKER_SYNTH_DIR, built by the tests' first run). Per module it prints cosmic-ray's
# report (every surviving mutant with its diff) and the survival rate; results stay in
# $MUTATION_DIR/<name>.sqlite (re-run `cr-report <file> --show-diff` to read them again).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3
WORK=${MUTATION_DIR:-$(mktemp -d /tmp/mutation.XXXX)}
REF=${SADTALKER_REFERENCE_DIR:-$(cd "$REPO/.." && pwd)/shared/reference}
TIMEOUT=${MUTATION_TIMEOUT:-900}
mkdir -p "$WORK"
if [ ! -x "$WORK/tools/bin/cosmic-ray" ]; then
    "$PY" -m pip install -q --target "$WORK/tools" cosmic-ray==8.7.0
fi
rm -rf "$WORK/src" && mkdir -p "$WORK/src"
(cd "$REPO" && git ls-files -z | xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$WORK/src"

declare -A MODULE TESTS
MODULE[stage]=sadtalker_ext/lipsync/stage.py
TESTS[stage]="tests/test_glue_inputs.py tests/test_lipsync_stage.py tests/test_e2e_goldens.py -k 'wav2lip or Wav2Lip or mel or face_input or bgr or fractional or pixels or batch or only_mouth or without_face'"
MODULE[sadtalker]=sadtalker_ext/engines/sadtalker.py
TESTS[sadtalker]="tests/test_glue_inputs.py tests/test_e2e_goldens.py tests/test_sadtalker_engine.py -k 'kp_detector or mapping or sadtalker or motion or streaming or full_mode or reference'"
MODULE[lite]=sadtalker_ext/engines/lite.py
TESTS[lite]="tests/test_lite_e2e.py tests/test_lite_motion_measured.py tests/test_lite_inputs.py"
MODULE[motion]=sadtalker_ext/motion/lite
TESTS[motion]="tests/test_lite_motion_measured.py tests/test_lite_e2e.py tests/test_lite_inputs.py"
MODULE[options]=sadtalker_ext/options.py
TESTS[options]="tests/test_option_bounds.py tests/test_ui_build.py -k 'bounds or accepts or refuses or option or form'"

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(options stage sadtalker lite motion)
cd "$WORK/src"
for name in "${names[@]}"; do
    [ -n "${MODULE[$name]:-}" ] || { echo "unknown module '$name' (use: ${!MODULE[*]})" >&2; exit 2; }
    cfg="$WORK/$name.toml"
    cat > "$cfg" <<TOML
[cosmic-ray]
module-path = "${MODULE[$name]}"
timeout = $TIMEOUT.0
excluded-modules = []
test-command = "env -u PYTHONPATH SADTALKER_REFERENCE_DIR=$REF $PY -m pytest -x -q -p no:cacheprovider ${TESTS[$name]}"

[cosmic-ray.distributor]
name = "local"
TOML
    export PYTHONPATH="$WORK/tools"
    "$WORK/tools/bin/cosmic-ray" init "$cfg" "$WORK/$name.sqlite"
    "$WORK/tools/bin/cosmic-ray" baseline "$cfg" || { echo "$name: the tests fail without mutation" >&2; exit 1; }
    "$WORK/tools/bin/cosmic-ray" exec "$cfg" "$WORK/$name.sqlite"
    "$WORK/tools/bin/cr-report" "$WORK/$name.sqlite" --show-diff --surviving-only || true
    echo "== $name (${MODULE[$name]}): survival rate (surviving / all mutants):"
    "$WORK/tools/bin/cr-rate" "$WORK/$name.sqlite"
done
echo "results in $WORK"
