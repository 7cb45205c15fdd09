"""Study files: valid ones resolve; every mistake gives one message naming the key."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from sweep_support import tiny_study

from tomosweep.errors import InputError, SpecError
from tomosweep.sweep.spec import SearchRange, check_extension, load_study, study_from_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def message(raw: dict) -> str:
    with pytest.raises(SpecError) as info:
        study_from_dict(raw, source="s.toml")
    text = str(info.value)
    assert "pydantic" not in text and "errors.pydantic.dev" not in text and "Traceback" not in text
    return text


def test_example_files_are_valid():
    quick = load_study(EXAMPLES / "quickstart.toml")
    assert quick.acquisition.n_haadf == [10, 20, 40] and quick.acquisition.n_chem == [3, 6, 12]
    assert set(quick.methods) == {"fused", "sirt"}
    assert len(quick.cells) >= 9
    paper = load_study(EXAMPLES / "paper_scale.toml")
    assert paper.phantom.size == 256


def test_resolution_of_fixed_searched_and_default_parameters():
    study = study_from_dict(tiny_study())
    assert set(study.searched("fused")) == {"lambda_haadf"}
    assert study.searched("fused")["lambda_haadf"] == SearchRange(low=0.1, high=10.0, prior="log")
    assert study.fixed("fused") == {"lambda_chem": 1.0, "lambda_tv": 1.0, "n_iter": 4}  # lambda_chem by default
    assert study.param_names == ("lambda_haadf", "lambda_chem", "lambda_tv", "n_iter")
    assert study.cells == [(5, 3), (9, 3)]


def test_hash_ignores_cluster_but_not_budget():
    a = study_from_dict(tiny_study())
    b = study_from_dict(tiny_study(cluster={"n_workers": 2}))
    c = study_from_dict(tiny_study(budget={"trials_per_cell": 5, "initial_points": 2}))
    assert a.content_hash() == b.content_hash() != c.content_hash()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"colour": 1}, "unknown key 'colour' in the top level; allowed: name, seed"),
        ({"budget": {"initial_points": 2}}, "missing required key budget.trials_per_cell"),
        ({"budget": {"trials_per_cell": 2, "initial_points": 5}}, "initial_points (5) cannot exceed"),
        ({"budget": {"trials_per_cell": 0}}, "budget.trials_per_cell"),
        ({"phantom": {"name": "nanocubez", "size": 16}}, "unknown specimen 'nanocubez'; built-in specimens:"),
        ({"phantom": {"size": 16}}, "give exactly one of name"),
        ({"phantom": {"name": "nanocubes", "size": 8}}, "phantom.size"),
        ({"phantom": {"name": "nanocubes", "size": 16, "options": {"sides": 3}}}, "has no option 'sides'"),
        ({"acquisition": {"n_haadf": [5, 5], "n_chem": [3]}}, "tilt counts must be distinct"),
        ({"acquisition": {"n_haadf": [5], "n_chem": [3], "tilt_range": [70, -70]}}, "tilt_range must be"),
        ({"acquisition": {"n_haadf": [5], "n_chem": [3], "exposure": 2}}, "unknown key 'exposure' in [acquisition]"),
        ({"methods": {"art": {}}}, "unknown method 'art'; allowed: fused, hebt, sirt"),
        ({"methods": {"sirt": {"n_iters": 5}}}, "method 'sirt' has no parameter 'n_iters'; allowed: n_iter"),
        ({"methods": {"sirt": {"n_iter": 20}}}, "method 'sirt' searches nothing"),
        (
            {"methods": {"sirt": {"n_iter": {"low": 2.5, "high": 30}}}},
            "methods.sirt.n_iter is an integer parameter",
        ),
        (
            {"methods": {"fused": {"lambda_tv": {"low": 0, "high": 1, "prior": "log"}}}},
            "methods.fused.lambda_tv: a log prior needs low > 0",
        ),
        (
            {"methods": {"fused": {"lambda_tv": {"low": 2, "high": 1}}}},
            "methods.fused.lambda_tv: low (2.0) must be smaller than high (1.0)",
        ),
        (
            {"methods": {"fused": {"lambda_tv": {"low": 1, "high": 2, "prior": "cubic"}}}},
            "methods.fused.lambda_tv",
        ),
        ({"methods": {"fused": {"lambda_tv": "big"}}}, "methods.fused.lambda_tv must be a number"),
        ({"cluster": {"backend": "address"}}, 'backend = "address" needs address'),
        ({"cluster": {"backend": "k8s"}}, "cluster.backend: must be 'local', 'local-cuda', 'slurm'"),
        ({"cluster": {"backend": "local", "queue": "batch"}}, "queue is only used with backend = 'slurm'"),
        ({"cluster": {"backend": "slurm", "min_jobs": 3, "max_jobs": 2}}, "min_jobs (3) is larger than max_jobs (2)"),
        (
            {"cluster": {"backend": "slurm", "min_jobs": 0}},
            "cluster.min_jobs: Input should be greater than or equal to 1",
        ),
        ({"cluster": {"backend": "address", "address": "tls://h:8786"}}, "a tls:// address needs tls_ca_file"),
        ({"cluster": {"backend": "address", "address": "h:8786"}}, "address must start with tcp:// or tls://"),
        ({"cluster": {"backend": "slurm", "gpus": 2, "processes": 4}}, "processes must be 2 (one worker per GPU)"),
        ({"cluster": {"backend": "local-cuda"}}, 'gives each trial a GPU, but device = "cpu"'),
        ({"cluster": {"backend": "local", "partition": "x"}}, "unknown key 'partition' in [cluster]; allowed: backend"),
        ({"device": "tpu"}, "device: must be 'cpu', 'gpu' or 'auto'"),
    ],
)
def test_mistakes_name_the_key_and_what_is_allowed(change, expected):
    text = message(tiny_study(**change))
    assert text.startswith("s.toml: invalid study file")
    assert expected in text


def test_several_mistakes_are_all_listed():
    text = message(tiny_study(colour=1, device="tpu"))
    assert "unknown key 'colour'" in text and "device:" in text


def test_toml_syntax_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[phantom\n")
    with pytest.raises(SpecError, match=r"bad.toml: not valid TOML: .*line 2"):
        load_study(bad)
    with pytest.raises(SpecError, match="does not exist"):
        load_study(tmp_path / "missing.toml")


def test_phantom_file_is_resolved_relative_to_the_study(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "study.toml"
    path.write_text(
        "[phantom]\nfile = 'truth.npz'\nsize = 16\n"
        "[acquisition]\nn_haadf = [5]\nn_chem = [3]\n"
        "[methods.sirt]\nn_iter = { low = 2, high = 9 }\n"
        "[budget]\ntrials_per_cell = 2\ninitial_points = 1\n"
    )
    study = load_study(path)
    assert Path(study.phantom.file) == (tmp_path / "sub" / "truth.npz").resolve()


def test_extension_allows_only_budget_and_grid():
    stored = study_from_dict(tiny_study())
    bigger = study_from_dict(
        tiny_study(
            budget={"trials_per_cell": 6, "initial_points": 2}, acquisition={"n_haadf": [5, 9, 12], "n_chem": [3]}
        )
    )
    changes = check_extension(stored, bigger)
    assert changes == ["n_haadf + [12]", "trials_per_cell 4 → 6"]
    with pytest.raises(SpecError, match="a grid may only grow"):
        check_extension(bigger, stored)
    with pytest.raises(SpecError, match="'seed' differs"):
        check_extension(stored, study_from_dict(tiny_study(seed=9)))
    noisier = tiny_study()
    noisier["acquisition"]["chem_snr"] = 1.0
    with pytest.raises(SpecError, match="acquisition chem_snr differ"):
        check_extension(stored, study_from_dict(noisier))


def test_an_extension_may_raise_or_lift_the_total_and_names_what_it_may_not_change():
    def budget(**extra):
        return study_from_dict(tiny_study(budget={"trials_per_cell": 4, "initial_points": 2, **extra}))

    assert check_extension(budget(total=6), budget(total=8)) == ["total 6 → 8"]
    assert check_extension(budget(total=6), budget()) == ["total 6 → no cap"]
    with pytest.raises(SpecError, match=r"budget.total may only grow \(stored 6, new 5\)"):
        check_extension(budget(total=6), budget(total=5))
    with pytest.raises(SpecError, match=r"budget.total may only grow \(stored none, no cap, new 5\)"):
        check_extension(budget(), budget(total=5))
    with pytest.raises(SpecError, match=r"^budget.liar, budget.prune must stay as stored; only trials_per_cell, "):
        check_extension(budget(), budget(liar="cl_max", prune=True))


def test_an_empty_method_table_searches_the_default_ranges():
    from tomosweep.sweep.methods import METHODS

    study = study_from_dict(tiny_study(methods={"fused": {}, "sirt": {}}))
    fused = METHODS["fused"]
    assert set(study.searched("fused")) == {p.name for p in fused.params if p.searched} == {"lambda_haadf", "lambda_tv"}
    p = fused.param("lambda_haadf")
    assert study.searched("fused")["lambda_haadf"] == SearchRange(low=p.low, high=p.high, prior=p.prior)
    assert study.fixed("fused") == {"lambda_chem": 1.0, "n_iter": fused.param("n_iter").default}
    assert set(study.searched("sirt")) == {"n_iter"}
    # a table that names parameters but searches none is still a mistake
    with pytest.raises(SpecError, match="searches nothing"):
        study_from_dict(tiny_study(methods={"fused": {"lambda_tv": 2.0}}))


_GRID = {"n_haadf": [5], "n_chem": [3]}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"acquisition": {**_GRID, "gamma": 0.5}}, "acquisition.gamma: Input should be greater than or equal to 1"),
        ({"acquisition": {**_GRID, "gamma": float("inf")}}, "acquisition.gamma: Input should be a finite number"),
        ({"acquisition": {**_GRID, "haadf_snr": float("inf")}}, "haadf_snr: Input should be a finite number"),
        ({"acquisition": {**_GRID, "chem_snr": {"Co": float("nan")}}}, "Co: Input should be a finite number"),
        ({"acquisition": {**_GRID, "chem_snr": 0.0}}, "chemical SNR must lie in (0, 1e4]"),
        ({"acquisition": {**_GRID, "background": 50}}, "background: Input should be less than 10"),
        ({"acquisition": {"n_haadf": [5, 100000], "n_chem": [3]}}, "tilt counts must lie in 1–1000"),
        ({"methods": {"sirt": {"n_iter": {"low": 2, "high": float("inf")}}}}, "high: Input should be a finite number"),
        ({"methods": {"sirt": {"n_iter": {"low": float("nan"), "high": 9}}}}, "low: Input should be a finite number"),
        ({"methods": {"sirt": {"n_iter": {"low": 2, "high": 10**9}}}}, "high = 1e+09 is beyond 100000"),
        ({"methods": {"hebt": {"alpha": 1.5, "n_iter": {"low": 2, "high": 9}}}}, "hebt.alpha = 1.5 is beyond 1"),
    ],
)
def test_numbers_that_would_fail_every_trial_are_refused_up_front(override, message):
    with pytest.raises(SpecError) as info:
        study_from_dict(tiny_study(**override))
    assert message in str(info.value)


def test_a_chem_snr_table_must_name_exactly_the_specimens_elements(tmp_path):
    from tomosweep.sweep.api import _elements

    partial = study_from_dict(tiny_study(acquisition={**_GRID, "chem_snr": {"Co": 2.0, "Cu": 2.0, "O": 2.0}}))
    with pytest.raises(SpecError, match="must name exactly the specimen's elements .*; missing Au"):
        _elements(partial)
    extra = {"Co": 2.0, "Cu": 2.0, "O": 2.0, "Au": 2.0, "Ag": 1.0}
    with pytest.raises(SpecError, match="not in the specimen: Ag"):
        _elements(study_from_dict(tiny_study(acquisition={**_GRID, "chem_snr": extra})))


def test_element_names_come_from_the_specimen_at_the_studys_size():
    # an option valid at 64³ (a thin tube wall) cannot be built at 16³
    from tomosweep.sweep.api import _elements

    study = study_from_dict(
        tiny_study(phantom={"name": "conio_composite", "size": 64, "options": {"inner_radius": 0.25}})
    )
    assert _elements(study) == ("Co", "Ni", "O")


def test_element_names_of_a_built_in_specimen_are_declared_not_built(monkeypatch):
    from tomosweep.phantoms import SPECIMENS, core_shell_2d
    from tomosweep.sweep.api import _elements

    def never(n, **options):
        raise AssertionError("the driver built a specimen to learn its elements")

    monkeypatch.setitem(SPECIMENS, "conio_composite", functools.wraps(SPECIMENS["conio_composite"])(never))
    study = study_from_dict(tiny_study(phantom={"name": "conio_composite", "size": 32}))
    assert _elements(study) == ("Co", "Ni", "O")
    # the options are still checked at the study's size, as the build checked them
    thin = study_from_dict(
        tiny_study(phantom={"name": "conio_composite", "size": 16, "options": {"inner_radius": 0.25}})
    )
    with pytest.raises(InputError, match="does not fit in a tube wall"):
        _elements(thin)
    # a specimen without a declaration (a plugin's) is built to learn them
    monkeypatch.setitem(SPECIMENS, "plugin_particle", core_shell_2d)
    assert _elements(study_from_dict(tiny_study(phantom={"name": "plugin_particle", "size": 16}))) == ("Ag", "Au")


def test_a_method_is_one_adapter_and_one_registration_line():
    from tomosweep.solvers import sirt
    from tomosweep.sweep.methods import METHODS, Method, Param, register

    def first_element_sirt(cell, params, device):
        return sirt(cell.chem_projector, cell.chem[0], n_iter=int(params["n_iter"]), device=device)

    register(
        Method("sirt_first", (Param("n_iter", "int", 10, 2, 50, "log", "SIRT iterations"),), first_element_sirt, "toy")
    )
    try:
        study = study_from_dict(tiny_study(methods={"sirt_first": {}}))
        assert "n_iter" in study.searched("sirt_first")
        with pytest.raises(ValueError, match="registered already"):
            register(METHODS["sirt_first"])
    finally:
        del METHODS["sirt_first"]
