#!/usr/bin/env bash
# The CuPy path on a real GPU, in one run that fits in 8 minutes.
#
#     bash benchmarks/gpu_check.sh RESULTS_DIR [WHEELS_DIR]     # on a GPU machine
#     bash benchmarks/gpu_check.sh --cpu RESULTS_DIR            # dry run: same steps, CPU, tiny sizes
#     GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh RESULTS_DIR   # the same dry run
#
# Run from the repository root. Steps, in order, each under its own time limit
# (`timeout`), each writing its log (and JSON) into RESULTS_DIR; a failing step never
# stops the next one:
#
#   env          the device's name (nvidia-smi); the wheels of WHEELS_DIR
#                (benchmarks/gpu_wheels.sh makes them) and tomosweep itself installed
#                into a private folder put on PYTHONPATH, with no index (no internet
#                needed); the imports and versions that matter
#   pytest       python -m pytest -m gpu: every solver on CuPy against NumPy, the
#                projector, local-cuda with two workers on one GPU, and a one-cell
#                study whose stored NRMSE equals the CPU run's
#   profile      benchmarks/gpu_profile.py: one fused iteration at 256³ × 4 elements,
#                45 HAADF and 9 chemical tilts, split into SpMM, TV prox, elementwise
#   paper_scale  benchmarks/paper_scale.py --device gpu on one 256³ cell
#
# and at the end RESULTS_DIR/summary.json (every step's status, limit, seconds, exit
# code and headline figures). RESULTS_DIR holds seven files: summary.json, env.log,
# pytest.log, profile.json, profile.log, paper_scale.json, paper_scale.log.
#
# Time: GPU_CHECK_BUDGET_S (default 460 s) for everything; each step gets its nominal
# limit plus whatever earlier steps left unused, always keeping the later steps'
# nominal limits in reserve. Exit status: 0 when every step passed, else 1.
set -uo pipefail

dry=${GPU_CHECK_DRY:-0}
if [[ "${1:-}" == "--cpu" ]]; then
    dry=1
    shift
fi
if [[ $# -lt 1 || $# -gt 2 || "$1" == -* ]]; then
    echo "usage: bash benchmarks/gpu_check.sh [--cpu] RESULTS_DIR [WHEELS_DIR]" >&2
    exit 2
fi
results=$1
wheels=${2:-}
if [[ ! -f pyproject.toml || ! -d benchmarks ]]; then
    echo "gpu_check: run it from the repository root (no pyproject.toml in $PWD)" >&2
    exit 2
fi
if [[ -n "$wheels" && ! -d "$wheels" ]]; then
    echo "gpu_check: the wheels folder $wheels does not exist (make it with benchmarks/gpu_wheels.sh)" >&2
    exit 2
fi
mkdir -p "$results" || exit 2
results=$(cd "$results" && pwd)

python=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET_S:-460}
t_start=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# projector matrices and CuPy's compiled kernels stay out of RESULTS_DIR and the home folder
export TOMOSWEEP_CACHE_DIR="$work/projectors"
export CUPY_CACHE_DIR="${CUPY_CACHE_DIR:-$work/cupy}"
export MPLBACKEND=Agg

if [[ "$dry" == 1 ]]; then
    mode="dry run on CPU (tiny sizes)"
    device_flag=cpu
    profile_args=(--n 32 --device cpu --iterations 3)
    paper_args=(--n 24 --device cpu --cell 45,9 --trials 2)
else
    mode="GPU"
    device_flag=gpu
    profile_args=(--n 256 --elements 4 --haadf 45 --chem 9 --device gpu --iterations 5)
    paper_args=(--n 256 --device gpu --cell 45,9 --trials 2)
fi

# nominal limits (seconds), in step order; they add up to the default budget, which leaves
# 20 s of the 8 minutes for `timeout`'s grace periods and the summary
steps=(env pytest profile paper_scale)
declare -A nominal=([env]=50 [pytest]=150 [profile]=90 [paper_scale]=170)
declare -A status limit seconds rc

elapsed() { echo $(($(date +%s) - t_start)); }

# limit of step $1: what is left of the budget minus the later steps' nominal limits
limit_for() {
    local name=$1 later=0 seen=0 s
    for s in "${steps[@]}"; do
        if [[ $seen == 1 ]]; then later=$((later + nominal[$s])); fi
        if [[ $s == "$name" ]]; then seen=1; fi
    done
    local left=$((budget - $(elapsed) - later))
    echo $((left > 0 ? left : 0))
}

# run_step NAME LOG COMMAND...: under `timeout`, output into LOG; records status/rc/seconds
run_step() {
    local name=$1 log=$2
    shift 2
    local lim t0 code
    lim=$(limit_for "$name")
    limit[$name]=$lim
    if ((lim < 5)); then
        status[$name]=skipped
        rc[$name]=""
        seconds[$name]=0
        echo "== $name: skipped, the budget of ${budget} s is spent" | tee -a "$log"
        return
    fi
    echo "== $name (limit ${lim} s): $*" | tee -a "$log"
    t0=$(date +%s)
    # TERM to the step's whole process group (Dask workers included), KILL 5 s later
    timeout --kill-after=5 "$lim" "$@" >>"$log" 2>&1
    code=$?
    seconds[$name]=$(($(date +%s) - t0))
    rc[$name]=$code
    if ((code == 0)); then
        status[$name]=passed
    elif ((code == 124 || code == 137)); then
        status[$name]=timeout
    else
        status[$name]=failed
    fi
    echo "== $name: ${status[$name]} (exit $code, ${seconds[$name]} s)" | tee -a "$log"
}

# ---------------------------------------------------------------- env
env_step() {
    echo "mode: $mode"
    echo "repository: $(git rev-parse HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | wc -l) changed files"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    else
        echo "nvidia-smi: not found"
    fi
    "$python" --version
    if [[ -n "$wheels" && "$dry" != 1 ]]; then
        local site="$work/site" src="$work/src"
        # tomosweep is built from a copy of its sources, so the build leaves nothing in the tree
        mkdir -p "$src"
        cp -r pyproject.toml README.md core cluster phantoms results series solvers sweep "$src"/ || return 1
        echo "installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels and tomosweep into $site (no index)"
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --no-build-isolation \
            --target "$site" "$wheels"/*.whl "$src" || return 1
        echo "PYTHONPATH=$site"
    elif [[ -n "$wheels" ]]; then
        echo "dry run: the wheels in $wheels are for CPython 3.12 on the GPU machine; this Python's own environment is used"
    fi
    "$python" - "$device_flag" <<'PY'
import importlib
import importlib.metadata as md
import sys

rows = []
for dist in ("tomosweep", "numpy", "scipy", "cupy-cuda13x", "cupy-cuda12x", "dask", "distributed", "dask-cuda",
             "zarr", "pydantic", "scikit-learn", "bokeh", "pytest"):
    try:
        rows.append(f"{dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        pass
print("versions:", ", ".join(rows))
for module in ("tomosweep.sweep.api", "tomosweep.results", "tomosweep.cluster", "tomosweep.series"):
    importlib.import_module(module)
print("tomosweep imports: ok from", importlib.import_module("tomosweep").__file__)
from tomosweep.solvers import backend

print("gpu:", backend.device_name(backend.array_module("gpu")) if backend.gpu_available()
      else f"none ({backend.gpu_unavailable_reason()})")
if sys.argv[1] == "gpu":
    backend.resolve_device("gpu")  # a missing GPU fails this step with its one-line reason
    import dask_cuda  # noqa: F401  (local-cuda)

    print("dask_cuda imports: ok")
PY
}

# ---------------------------------------------------------------- summary
write_summary() {
    local args=()
    for s in "${steps[@]}"; do
        args+=("$s" "${status[$s]:-not run}" "${limit[$s]:-}" "${seconds[$s]:-}" "${rc[$s]:-}")
    done
    "$python" - "$results" "$mode" "$budget" "$(elapsed)" "$device_name" "$work/pytest.xml" "${args[@]}" <<'PY'
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

results, mode, budget, total, device, junit = sys.argv[1:7]
results = Path(results)
rest = sys.argv[7:]
steps = []
for i in range(0, len(rest), 5):
    name, status, limit, seconds, rc = rest[i : i + 5]
    steps.append({
        "name": name,
        "status": status,
        "limit_s": int(limit) if limit else None,
        "seconds": int(seconds) if seconds else None,
        "exit_code": int(rc) if rc else None,
    })


def load(name):
    path = results / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


tests = None
if Path(junit).is_file():
    tests = {"passed": [], "failed": [], "skipped": []}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        skipped = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            tests["failed"].append(name)
        elif skipped is not None:
            tests["skipped"].append(f"{name}: {skipped.get('message', '')}")
        else:
            tests["passed"].append(name)

profile, paper = load("profile.json"), load("paper_scale.json")
figures = {}
if profile:
    figures["fused_seconds_per_iteration"] = profile.get("seconds_per_iteration")
    figures["fused_split_fraction"] = profile.get("split_fraction")
    figures["fused_geometry"] = profile.get("geometry")
if paper:
    figures["paper_scale_seconds_per_trial"] = paper.get("seconds_per_trial")
    figures["paper_scale_map_device_hours"] = paper.get("map_device_hours")
summary = {
    "mode": mode,
    "device": device,
    "budget_s": int(budget),
    "total_s": int(total),
    "all_passed": all(s["status"] == "passed" for s in steps),
    "steps": steps,
    "tests": tests,
    "figures": figures,
}
(results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({k: summary[k] for k in ("mode", "device", "total_s", "all_passed")}))
for s in steps:
    print(f"  {s['name']:<12} {s['status']:<8} {s['seconds']} s of {s['limit_s']} s")
if tests is not None:
    print(f"  tests: {len(tests['passed'])} passed, {len(tests['failed'])} failed, {len(tests['skipped'])} skipped")
    for name in tests["failed"]:
        print(f"    FAILED {name}")
PY
}

# ---------------------------------------------------------------- run
device_name="none"
[[ "$dry" == 1 ]] && device_name="none (dry run on CPU)"
if command -v nvidia-smi >/dev/null; then
    device_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
    device_name=${device_name:-"nvidia-smi found no GPU"}
fi
echo "gpu_check: $mode; device: $device_name; results in $results; budget ${budget} s"

# env runs in this shell (its PYTHONPATH must reach the later steps), under a watchdog
env_log="$results/env.log"
: >"$env_log"
limit[env]=$(limit_for env)
echo "== env (limit ${limit[env]} s)" | tee -a "$env_log"
t0=$(date +%s)
if [[ -n "$wheels" && "$dry" != 1 ]]; then
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$work/site/bin:$PATH"
fi
export -f env_step
export mode wheels dry work python device_flag
timeout --kill-after=5 "${limit[env]}" bash -c env_step >>"$env_log" 2>&1
rc[env]=$?
seconds[env]=$(($(date +%s) - t0))
case ${rc[env]} in
0) status[env]=passed ;;
124 | 137) status[env]=timeout ;;
*) status[env]=failed ;;
esac
echo "== env: ${status[env]} (exit ${rc[env]}, ${seconds[env]} s)" | tee -a "$env_log"

run_step pytest "$results/pytest.log" \
    "$python" -m pytest -m gpu -p no:cacheprovider -q -rs --junitxml="$work/pytest.xml" tests

run_step profile "$results/profile.log" \
    "$python" benchmarks/gpu_profile.py "${profile_args[@]}" --out "$results/profile.json"

run_step paper_scale "$results/paper_scale.log" \
    "$python" benchmarks/paper_scale.py "${paper_args[@]}" --out "$results/paper_scale.json"

write_summary
ok=1
for s in "${steps[@]}"; do
    [[ "${status[$s]}" == passed ]] || ok=0
done
rm -rf "$work"
exit $((ok ? 0 : 1))
