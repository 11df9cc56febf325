#!/usr/bin/env bash
# Mutation testing (mutmut 3.8.1) of the modules that assemble the networks' inputs and the lite motion,
# each against the tests that cover it. Not part of CI: the whole run takes hours on 2 cores.
#
#   bench/mutation.sh                       # all modules, smallest first
#   bench/mutation.sh options motion        # some (names: options motion stage lite sadtalker)
#   MUTATION_EVERY=5 bench/mutation.sh motion   # a reproducible sample: every 5th mutant by name
#
# mutmut 3 imports the tests once, records which test calls which function, then runs each mutant in a
# forked child with only the tests that call the mutated function (far faster than re-running pytest per
# mutant). It mutates function bodies only (module-level constants are not mutated).
#
# Works on a copy of the tracked files in $MUTATION_DIR/<name> (default: a new /tmp/mutation.XXXX), so the
# checkout is never mutated. mutmut is installed there (pip --target, only the packages the venv lacks),
# never into the venv; by hand that is:
#   python -m pip install --target DIR 'mutmut==3.8.1'
# Needs the reference fixtures (SADTALKER_REFERENCE_DIR, default ../shared/reference) and the synthetic
# checkpoints the tests build on their first run. Per module it prints mutmut's counts and every surviving
# mutant's diff; results stay in $MUTATION_DIR/<name>/mutants (`cd` there and `mutmut results` /
# `mutmut show NAME`, with PYTHONPATH=$MUTATION_DIR/tools). Latest measured score: bench/mutation-report.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3
WORK=${MUTATION_DIR:-$(mktemp -d /tmp/mutation.XXXX)}
REF=${SADTALKER_REFERENCE_DIR:-$(cd "$REPO/.." && pwd)/shared/reference}
CHILDREN=${MUTATION_CHILDREN:-1}
EVERY=${MUTATION_EVERY:-1}   # >1: run only every EVERY-th mutant (sorted by name), for a bounded run
mkdir -p "$WORK"
TOOLS="$WORK/tools"
if [ ! -d "$TOOLS/mutmut" ]; then
    "$PY" -m pip install -q --target "$WORK/pip" 'mutmut==3.8.1'
    mkdir -p "$TOOLS"
    # only what the venv lacks, so nothing of the venv (pytest, click, rich ...) is shadowed
    for pkg in mutmut libcst setproctitle textual coverage; do
        cp -r "$WORK/pip/$pkg" "$WORK/pip/$pkg"-*.dist-info "$TOOLS/"
    done
fi

declare -A MODULE TESTS
MODULE[options]=sadtalker_ext/options.py
# (the gradio-4 build runs in another interpreter that cannot import mutmut's trampoline; the gradio-3
# build covers the same options code)
TESTS[options]="tests/test_option_bounds.py tests/test_options_schema.py tests/test_ui_build.py --deselect=tests/test_ui_build.py::test_blocks_build_and_events_are_wired_under_gradio4"
MODULE[motion]=sadtalker_ext/motion/lite
TESTS[motion]="tests/test_lite_motion_values.py tests/test_lite_motion_measured.py tests/test_lite_e2e.py tests/test_lite_inputs.py"
MODULE[stage]=sadtalker_ext/lipsync/stage.py
TESTS[stage]="tests/test_lipsync_stage_values.py tests/test_glue_inputs.py tests/test_lipsync_stage.py tests/test_e2e_goldens.py tests/test_wav2lip_golden.py"
MODULE[lite]=sadtalker_ext/engines/lite.py
TESTS[lite]="tests/test_lite_engine_values.py tests/test_lite_e2e.py tests/test_lite_motion_measured.py tests/test_lite_inputs.py"
MODULE[sadtalker]=sadtalker_ext/engines/sadtalker.py
TESTS[sadtalker]="tests/test_sadtalker_engine_values.py tests/test_glue_inputs.py tests/test_e2e_goldens.py tests/test_sadtalker_engine.py"

# not `python -m mutmut`: the mutants import mutmut.__main__, which must be the module that runs
mutmut() { "$PY" -c 'import sys; from mutmut.__main__ import cli; sys.argv[0] = "mutmut"; cli()' "$@"; }

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(options motion stage lite sadtalker)
for name in "${names[@]}"; do
    [ -n "${MODULE[$name]:-}" ] || { echo "unknown module '$name' (use: ${!MODULE[*]})" >&2; exit 2; }
    dir="$WORK/$name"
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$REPO" && git ls-files -z | xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$dir"
    only=${MODULE[$name]}
    [ -d "$dir/$only" ] && only="$only/*.py"
    {
        echo "[mutmut]"
        echo "source_paths = sadtalker_ext"
        echo "only_mutate = $only"
        # the tests read the host entry, the front-end assets, install.py and the bench scripts too
        echo "also_copy ="
        for f in scripts javascript style.css install.py preload.py bench checkpoints README.md; do echo "    $f"; done
        # torch / mediapipe start threads once a test has run; a child forked from such a process can
        # segfault (with the default process_isolation = fork, every mutant of motion/lite "crashed").
        # forkserver forks each mutant from a server that has only collected the tests.
        echo "process_isolation = forkserver"
        echo "forkserver_warmup = ${MUTATION_WARMUP:-collect}"
        echo "pytest_add_cli_args = -pno:cacheprovider"
        echo "pytest_add_cli_args_test_selection ="
        for t in ${TESTS[$name]}; do echo "    $t"; done
    } > "$dir/setup.cfg"
    (
        cd "$dir"
        export PYTHONPATH="$TOOLS" SADTALKER_REFERENCE_DIR="$REF" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
        if [ "$EVERY" -gt 1 ]; then
            # a reproducible sample: generate the mutants and collect the test stats (the run stops on
            # the filter that matches nothing), then run every $EVERY-th mutant in mutmut's sorted order
            mutmut run --max-children "$CHILDREN" '__no_such_mutant__' >/dev/null 2>&1 || true
            mutmut results --all true 2>/dev/null | sed 's/:.*//; s/^ *//' | sort > "$WORK/$name.all"
            awk -v k="$EVERY" '(NR - 1) % k == 0' "$WORK/$name.all" > "$WORK/$name.sample"
            echo "== $name: $(wc -l < "$WORK/$name.sample") of $(wc -l < "$WORK/$name.all") mutants (every $EVERY-th)"
            xargs -a "$WORK/$name.sample" "$PY" -c 'import sys; from mutmut.__main__ import cli; sys.argv[0] = "mutmut"; cli()' run --max-children "$CHILDREN" || true
        else
            mutmut run --max-children "$CHILDREN" || true
        fi
        echo "== $name (${MODULE[$name]}): surviving mutants"
        mutmut results --all true 2>/dev/null > "$WORK/$name.results.all" || true
        mutmut results 2>/dev/null | tee "$WORK/$name.results"
        echo "== $name: counts (of the mutants run)"
        sed 's/.*: //' "$WORK/$name.results.all" | sort | uniq -c
        grep -E ': survived' "$WORK/$name.results" | sed 's/:.*//' | while read -r m; do
            mutmut show "$m"
        done
    )
done
echo "results in $WORK"
