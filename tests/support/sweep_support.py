"""What the sweep tests share: the tiny study and an in-process CLI run (a module of its own, so no other
test folder's conftest shadows it)."""

from __future__ import annotations

import copy
import sys


def tiny_study(**overrides) -> dict:
    """A study small enough to run in seconds: 16³ nanocubes, a 2 × 1 grid, cheap methods."""
    study = {
        "name": "tiny",
        "seed": 3,
        "phantom": {"name": "nanocubes", "size": 16},
        "acquisition": {"n_haadf": [5, 9], "n_chem": [3]},
        "methods": {
            "fused": {
                "lambda_haadf": {"low": 0.1, "high": 10.0, "prior": "log"},
                "lambda_tv": 1.0,
                "n_iter": 4,
            },
            "sirt": {"n_iter": {"low": 2, "high": 30, "prior": "log"}},
        },
        "budget": {"trials_per_cell": 4, "initial_points": 2},
        "cluster": {"n_workers": 1},
    }
    study = copy.deepcopy(study)
    for key, value in overrides.items():
        study[key] = value
    return study


# the same tiny study as a TOML file, SIRT only: what the command-line tests write to disk
TINY_SIRT_TOML = """
name = "tiny-sirt"
seed = 1
[phantom]
name = "nanocubes"
size = 16
[acquisition]
n_haadf = [5, 9]
n_chem = [3]
[methods.sirt]
n_iter = { low = 2, high = 30, prior = "log" }
[budget]
trials_per_cell = 3
initial_points = 2
"""


def run_cli(args, capsys) -> tuple[int, str, str]:
    """``tomosweep ARGS`` in this process: (exit status, stdout, stderr), as a shell would see them."""
    from tomosweep import cli

    code = 0
    saved = sys.argv
    sys.argv = ["tomosweep", *map(str, args)]
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
    captured = capsys.readouterr()
    return code, captured.out, captured.err
