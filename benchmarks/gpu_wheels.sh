#!/usr/bin/env bash
# The wheels a GPU machine without internet access needs to run benchmarks/gpu_check.sh.
#
#     bash benchmarks/gpu_wheels.sh [DEST]        # DEST defaults to .whl (ignored by git)
#
# Target: x86-64 Linux, CPython 3.12, an image that already holds CuPy (cupy-cuda13x),
# numpy, scipy, pandas, pyarrow, scikit-learn, h5py, tifffile, matplotlib, rich, typer,
# pytest and their usual companions (PREINSTALLED below). Everything else tomosweep
# imports travels as a wheel, pinned, downloaded with --no-deps so the set is exactly
# what is listed here; a closure check then proves every requirement of every wheel is
# either in the set or in PREINSTALLED, and the total stays under 50 MiB.
#
# CuPy itself is not downloaded: the project's `gpu` extra names cupy-cuda12x, the
# machine's CUDA 13 image has cupy-cuda13x (the `gpu-cuda13` extra), and a second CuPy
# would shadow the working one.
set -euo pipefail

dest=${1:-.whl}
max_mib=50
python=${PYTHON:-python3}

# name==version   why it travels
WHEELS=(
    "dask==2026.7.1                 task graphs under the sweep runner; the version dask-cuda 26.10 pins"
    "distributed==2026.7.1          the scheduler, workers and client (cluster/); pinned with dask"
    "dask-cuda==26.10.0             backend = \"local-cuda\": LocalCUDACluster (the gpu extra)"
    "rapids-dask-dependency==26.10.0  dask-cuda's declared pin on dask/distributed (no code of its own)"
    "tornado==6.6.1                 distributed's and bokeh's event loop"
    "tblib==3.2.2                   distributed: tracebacks from workers"
    "zict==3.0.0                    distributed and dask-cuda: spill buffers"
    "partd==1.4.2                   dask: shuffles"
    "locket==1.0.0                  partd: file locks"
    "dask-jobqueue==0.9.0           cluster/jobqueue.py (imported by the cluster tests)"
    "zarr==3.1.6                    the study store (results/)"
    "numcodecs==0.16.6              zarr's codecs"
    "google-crc32c==1.9.0           zarr 3's crc32c codec"
    "donfig==0.8.1.post1            zarr's configuration"
    "pydantic==2.13.4               study files and [cluster] settings (sweep/spec.py, cluster/settings.py)"
    "pydantic-core==2.46.4          pydantic's compiled core (its exact pin)"
    "annotated-types==0.7.0         pydantic"
    "typing-inspection==0.4.2       pydantic"
    "typing-extensions==4.15.0      pydantic 2.13 needs >= 4.14.1; the image's may be older"
    "bokeh==3.8.2                   tomosweep view and Dask's dashboard (collected by the test run)"
    "xyzservices==2026.9.1          bokeh"
    "mrcfile==1.5.4                 series/: .mrc tilt series"
)

# Distributions the GPU image already holds (its package list), which the closure
# check accepts without a wheel.
PREINSTALLED="numpy scipy pandas pyarrow scikit-learn joblib threadpoolctl h5py tifffile matplotlib
contourpy pillow narwhals rich typer click shellingham annotated-doc pytest packaging pyyaml jinja2
markupsafe msgpack psutil cloudpickle toolz sortedcontainers fsspec nvidia-ml-py cuda-core
cupy-cuda13x pygments markdown-it-py mdurl urllib3"

mkdir -p "$dest"
specs=()
for line in "${WHEELS[@]}"; do
    specs+=("${line%% *}")
done

echo "downloading ${#specs[@]} wheels into $dest (CPython 3.12, manylinux x86-64):"
for line in "${WHEELS[@]}"; do
    echo "  $line"
done
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$dest" "${specs[@]}"

# One version of each project, every requirement met, and the size limit.
"$python" - "$dest" "$max_mib" "$PREINSTALLED" "${specs[@]}" <<'PY'
import re
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

dest, max_mib, preinstalled, specs = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3].split(), sys.argv[4:]
wanted = {canonicalize_name(s.split("==")[0]): s.split("==")[1] for s in specs}
target = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}

have, problems = {}, []
for wheel in sorted(dest.glob("*.whl")):
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        msg = Parser().parsestr(zf.read(meta).decode())
    name = canonicalize_name(msg["Name"])
    if name in have:
        problems.append(f"two versions of {name}: {have[name][0]} and {msg['Version']} (remove one from {dest})")
    have[name] = (msg["Version"], msg.get_all("Requires-Dist") or [], wheel)
for name, version in wanted.items():
    if name not in have:
        problems.append(f"{name}=={version} was asked for but no wheel is in {dest}")
    elif have[name][0] != version:
        problems.append(f"{dest} holds {name} {have[name][0]}, not {version}")
for name in sorted(set(have) - set(wanted)):
    problems.append(f"{have[name][2].name} is in {dest} but not in the list (remove it)")

known = set(have) | {canonicalize_name(p) for p in preinstalled}
notes = []
for name, (version, requires, _) in sorted(have.items()):
    for text in requires:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(target):
            continue
        dep = canonicalize_name(req.name)
        if dep not in known:
            problems.append(f"{name} {version} needs {req}, which is neither a wheel here nor preinstalled")
        elif dep in have and not req.specifier.contains(have[dep][0], prereleases=True):
            notes.append(f"{name} {version} asks for {req}; the set has {dep} {have[dep][0]}")

size = sum(p.stat().st_size for p in dest.glob("*.whl")) / 2**20
print(f"{len(have)} wheels, {size:.1f} MiB (limit {max_mib:g} MiB)")
for note in notes:
    print(f"note: {note}")
if size >= max_mib:
    problems.append(f"the wheels take {size:.1f} MiB, over the {max_mib:g} MiB limit")
for problem in problems:
    print(f"error: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
