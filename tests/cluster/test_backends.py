"""Backends without a batch scheduler: settings resolution, job scripts by content, addresses, local-cuda."""

from __future__ import annotations

import stat
from pathlib import Path

import dask
import pytest
from cluster_support import assert_only_the_study_certificate_gets_in, small_study

from tomosweep.cluster import ClusterSettings, open_cluster, worker_environ
from tomosweep.cluster.jobqueue import (
    default_route_interface,
    job_script,
    make_certificates,
    make_cluster,
    pinned_devices,
    resolve,
)
from tomosweep.errors import ClusterError
from tomosweep.results import SweepStore
from tomosweep.sweep.api import run_study, with_cluster
from tomosweep.sweep.spec import study_from_dict

FULL = dict(
    queue="batch",
    account="proj42",
    walltime="01:30:00",
    cores=4,
    memory="16GB",
    prologue=["module load cuda/12", "conda activate tomo"],
    max_jobs=3,
)
ENV_LINE = "export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON="


def script(backend: str, **settings) -> str:
    return job_script(ClusterSettings(backend=backend, **settings), worker_environ())


def test_pbs_job_script():
    text = script("pbs", **FULL)
    for line in (
        "#PBS -q batch",
        "#PBS -A proj42",
        "#PBS -l select=1:ncpus=4:mem=15GB",
        "#PBS -l walltime=01:30:00",
        "module load cuda/12\nconda activate tomo\n" + ENV_LINE,
    ):
        assert line in text, line
    assert "--nthreads 1" in text and "--nworkers 4" in text  # one single-threaded worker per core
    assert '"MALLOC_TRIM_THRESHOLD_": None' in text and '"OMP_NUM_THREADS": 1' in text  # unset, one BLAS thread


def test_lsf_job_script_with_gpus():
    text = script("lsf", **{**FULL, "walltime": "01:30"}, gpus=2)
    for line in ("#BSUB -q batch", '#BSUB -P "proj42"', "#BSUB -n 4", "#BSUB -W 01:30", '#BSUB -gpu "num=2"'):
        assert line in text, line
    # one worker per GPU, each advertising the GPU resource every trial holds
    assert "--nworkers 2" in text and "--nthreads 2" in text and "--resources GPU=1" in text


def test_sge_job_script_with_site_directives():
    text = script("sge", **{**FULL, "walltime": "01:30:00"}, job_directives=["-pe smp 4", "-l h_vmem=4G"])
    for line in ("#$ -q batch", "#$ -P proj42", "#$ -l h_rt=01:30:00", "#$ -pe smp 4", "#$ -l h_vmem=4G"):
        assert line in text, line
    assert "conda activate tomo" in text


def test_slurm_job_script_gpus():
    text = script("slurm", cores=8, memory="64GB", gpus=1, queue="gpu")
    assert "#SBATCH -p gpu" in text and "#SBATCH --gres=gpu:1" in text
    assert "--nthreads 8" in text and "--resources GPU=1" in text and "--nworkers" not in text


@pytest.mark.parametrize("backend", ["pbs", "lsf", "sge", "slurm"])
def test_batch_job_scripts_reach_a_tls_scheduler_by_default(backend, tmp_path):
    text = script(backend, cores=2, memory="4GB", interface="lo", shared_temp_directory=str(tmp_path))
    folder = tmp_path / "tls-XXXXXXXX"  # made when a study starts
    assert " tls://127.0.0.1:<port> " in text and "--interface lo --protocol tls:// " in text
    assert f"--tls-ca-file {folder}/ca.pem --tls-cert {folder}/cert.pem --tls-key {folder}/key.pem" in text
    plain = script(backend, cores=2, memory="4GB", interface="lo", tls=False)
    assert " tcp://127.0.0.1:<port> " in plain and "--tls" not in plain and "tls://" not in plain


def test_the_scheduler_listens_on_the_default_routes_interface_unless_told():
    table = (
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "ib0\t000010AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
        "eno1\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
    )
    assert default_route_interface(table) == "eno1"
    assert default_route_interface(table.splitlines()[0] + "\n" + table.splitlines()[1]) is None  # no default route
    here = default_route_interface()
    kwargs = resolve(ClusterSettings(backend="slurm", cores=1, memory="1GB"))
    assert kwargs.get("interface") == here  # what this machine's route table says
    assert resolve(ClusterSettings(backend="slurm", cores=1, memory="1GB", interface="lo"))["interface"] == "lo"


def test_study_certificates_are_private_files_in_a_private_folder(tmp_path):
    settings = ClusterSettings(backend="slurm", shared_temp_directory=str(tmp_path / "shared"))
    security, folder = make_certificates(settings)
    assert folder.parent == tmp_path / "shared" and folder.name.startswith("tls-")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # the PEM files and the note of the driver that made them (for the next run to find if it dies)
    assert sorted(p.name for p in folder.iterdir()) == ["ca.pem", "cert.pem", "driver.json", "key.pem"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}
    assert "PRIVATE KEY" in (folder / "key.pem").read_text()
    assert security.require_encryption and security.tls_worker_key == str(folder / "key.pem")
    assert make_certificates(settings)[1] != folder  # one folder per study


def test_a_batch_clusters_scheduler_admits_only_the_studys_certificate(tmp_path):
    """The scheduler a SLURM study starts (no job submitted here): TLS only, dashboard on 127.0.0.1."""
    settings = ClusterSettings(
        backend="slurm", cores=1, memory="1GB", interface="lo", shared_temp_directory=str(tmp_path)
    )
    kwargs = resolve(settings)
    kwargs["security"], folder = make_certificates(settings)
    with make_cluster("slurm", kwargs) as cluster:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
        assert_only_the_study_certificate_gets_in(cluster.scheduler_address, folder)


def test_the_documented_htcondor_backend_is_valid_everywhere_once_registered(tmp_path):
    """The how-to's registration line: [cluster], --cluster and job-script know the backend at once."""
    import re

    from tomosweep.cluster.backends import BACKENDS
    from tomosweep.sweep.api import worker_job_script

    howto = (Path(__file__).parents[2] / "docs" / "howto" / "add-backend.md").read_text()
    code = next(c for c in re.findall(r"```python\n(.*?)```", howto, re.S) if '"htcondor"' in c)
    study = study_from_dict(small_study(backend="local", n_workers=1))
    with pytest.raises(ClusterError, match="--cluster 'htcondor': not a backend"):
        with_cluster(study, "htcondor")
    exec(compile(code, "docs/howto/add-backend.md", "exec"), {})
    try:
        with dask.config.set({"jobqueue.htcondor.disk": "4GB"}):  # a setting [cluster] has no key for
            settings = ClusterSettings(backend="htcondor", cores=8, memory="16GB", interface="lo", gpus=1)
            text = job_script(settings, worker_environ())
            assert "RequestCpus = MY.DaskWorkerCores" in text and "request_gpus = 1" in text
            assert " tls://127.0.0.1:<port> " in text and "--tls-key " in text
            assert with_cluster(study, "htcondor").cluster.backend == "htcondor"
            raw = small_study(backend="htcondor", cores=8, memory="16GB", interface="lo")
            assert "MY.DaskWorkerMemory = 16000000000" in worker_job_script(study_from_dict(raw))
    finally:
        del BACKENDS["htcondor"]


def test_settings_come_from_the_study_then_the_dask_config():
    config = {"jobqueue.slurm.cores": 16, "jobqueue.slurm.memory": "60GB", "jobqueue.slurm.queue": "long"}
    with dask.config.set(config):
        kwargs = resolve(ClusterSettings(backend="slurm", cores=2))
        assert kwargs["cores"] == 2 and kwargs["memory"] == "60GB"  # study wins, config fills in
        assert "queue" not in kwargs  # left to dask-jobqueue, which reads the same config key
        text = script("slurm", cores=2)
    assert "#SBATCH -p long" in text and "#SBATCH --mem=56G" in text


def test_missing_cores_and_memory_show_a_working_section():
    with dask.config.set({"jobqueue.pbs.cores": None, "jobqueue.pbs.memory": None}):
        with pytest.raises(ClusterError) as info:
            resolve(ClusterSettings(backend="pbs"))
    text = str(info.value)
    assert 'backend = "pbs" needs cores and memory per job' in text and "jobqueue.pbs.cores" in text
    assert '[cluster]\nbackend = "pbs"' in text and 'memory = "32GB"' in text
    with pytest.raises(ClusterError, match="cores = 6 is not a multiple of processes = 4"):
        resolve(ClusterSettings(backend="pbs", cores=6, memory="1GB", processes=4))


def test_multi_gpu_job_workers_get_their_own_device():
    assert pinned_devices("4,5,6", "SLURMCluster-3-0") == "4,5,6"
    assert pinned_devices("4,5,6", "SLURMCluster-3-1") == "5,6,4"
    assert pinned_devices("4,5,6", "SLURMCluster-3-2") == "6,4,5"
    assert pinned_devices(None, "job-1") == "1"
    assert pinned_devices("0,1", "worker") is None


def test_cluster_flag_replaces_the_backend():
    study = study_from_dict(small_study(backend="local", n_workers=1))
    assert with_cluster(study, None) is study
    assert with_cluster(study, "local") is study  # same backend: the study's settings stay
    slurm = with_cluster(study, "slurm").cluster
    assert slurm.backend == "slurm" and slurm.cores is None  # the rest comes from the Dask config
    remote = with_cluster(study, "tcp://10.0.0.5:8786").cluster
    assert remote.backend == "address" and remote.address == "tcp://10.0.0.5:8786"
    assert with_cluster(study, "slurm").content_hash() == study.content_hash()  # same trials, other place
    with pytest.raises(ClusterError, match="--cluster 'kubernetes': not a backend"):
        with_cluster(study, "kubernetes")
    with pytest.raises(ClusterError, match="a tls:// address needs tls_ca_file"):
        with_cluster(study, "tls://10.0.0.5:8786")


def test_unreachable_scheduler_is_a_clear_error_and_no_store(tmp_path):
    study = study_from_dict(small_study(backend="address", address="tcp://127.0.0.1:9", start_timeout=2))
    with pytest.raises(ClusterError, match=r"cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        run_study(study, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_missing_certificate_file_is_named(tmp_path):
    settings = ClusterSettings(
        backend="address",
        address="tls://127.0.0.1:8786",
        tls_ca_file=str(tmp_path / "ca.pem"),
        tls_cert=str(tmp_path / "c.pem"),
        tls_key=str(tmp_path / "k.pem"),
    )
    with pytest.raises(ClusterError, match=r"tls_ca_file = '.*ca.pem': no such file"):
        with open_cluster(settings):
            pass


@pytest.mark.slow
def test_tls_scheduler_with_certificate_files(tmp_path):
    """A study runs on an existing TLS-only scheduler, reached with PEM files named in [cluster]."""
    pytest.importorskip("cryptography", reason="Security.temporary() needs cryptography")
    from distributed import LocalCluster
    from distributed.security import Security

    sec = Security.temporary()  # one self-signed certificate; its PEM text, written out as files
    paths = {}
    for key, pem in (
        ("tls_ca_file", sec.tls_ca_file),
        ("tls_cert", sec.tls_client_cert),
        ("tls_key", sec.tls_client_key),
    ):
        paths[key] = str(tmp_path / f"{key}.pem")
        with open(paths[key], "w") as fh:
            fh.write(pem)
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, security=sec, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        raw = small_study(backend="address", address=address, **paths)
        raw["budget"] = {"trials_per_cell": 2, "initial_points": 1}
        study = study_from_dict(raw)
        seen = {}
        summary = run_study(study, tmp_path / "s.zarr", on_client=lambda conn: seen.update(conn=conn))
        assert summary.complete and summary.n_new == 8
        assert seen["conn"].slots is None  # an existing scheduler: count its live workers
        # the same scheduler over plain tcp is refused with a message
        plain = study_from_dict(small_study(backend="address", address=address.replace("tls", "tcp"), start_timeout=2))
        with pytest.raises(ClusterError, match="cannot reach the Dask scheduler"):
            run_study(plain, tmp_path / "t.zarr")


def test_local_cuda_without_a_gpu_says_what_is_missing(monkeypatch):
    from tomosweep.solvers.backend import gpu_available

    if gpu_available():
        pytest.skip("this machine has a GPU: the local-cuda test runs instead")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ClusterError, match=r'local-cuda" needs (dask-cuda|a CUDA GPU)'):
        with open_cluster(ClusterSettings(backend="local-cuda")):
            pass


@pytest.mark.gpu
def test_local_cuda_runs_trials_one_per_gpu(tmp_path):
    from tomosweep.solvers.backend import gpu_available, gpu_unavailable_reason

    if not gpu_available():
        pytest.skip(f"no GPU: {gpu_unavailable_reason()}")
    pytest.importorskip("dask_cuda", reason="dask-cuda is not installed (pip install 'tomosweep[gpu]')")
    raw = small_study(backend="local-cuda")
    raw["device"] = "gpu"
    seen = {}
    summary = run_study(study_from_dict(raw), tmp_path / "s.zarr", on_client=lambda conn: seen.update(conn=conn))
    assert summary.complete and summary.n_failed == 0
    conn = seen["conn"]
    assert conn.resources == {"GPU": 1} and conn.description.startswith("local CUDA cluster: one worker on each")
    with SweepStore.open(tmp_path / "s.zarr") as store:
        records = store.records()
    assert all(r.device != "cpu" for r in records), {r.device for r in records}


def test_examples_validate_and_render(tmp_path):
    """examples/slurm.toml is a valid study; examples/jobqueue.yaml alone is enough for `backend = "slurm"`."""
    import yaml

    from tomosweep.sweep.spec import load_study

    examples = Path(__file__).parents[2] / "examples"
    study = load_study(examples / "slurm.toml")
    text = job_script(study.cluster, worker_environ())
    assert "#SBATCH -p compute" in text and "#SBATCH --cpus-per-task=16" in text and "--nworkers 16" in text
    site = yaml.safe_load((examples / "jobqueue.yaml").read_text())["jobqueue"]["slurm"]
    with dask.config.set({f"jobqueue.slurm.{key}": value for key, value in site.items()}):  # as if merged from YAML
        text = script("slurm", interface="lo")  # the study's key wins (this machine has no ib0)
    assert "#SBATCH -A my-project" in text and "#SBATCH --mem=60G" in text and "--interface lo" in text
    assert "source $HOME/venvs/tomosweep/bin/activate" in text


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_resume_on_an_unreachable_cluster_leaves_the_store_as_it_was(tmp_path):
    from tomosweep.results import SweepStore
    from tomosweep.sweep.api import _elements, resume_study

    raw = small_study(backend="address", address="tcp://127.0.0.1:9", start_timeout=2)
    study = study_from_dict(raw)
    path = tmp_path / "s.zarr"
    SweepStore.create(
        path,
        spec=study.to_json(),
        spec_hash=study.content_hash(),
        methods=list(study.methods),
        param_names=study.param_names,
        elements=_elements(study),
        n_haadf=study.acquisition.n_haadf,
        n_chem=study.acquisition.n_chem,
    ).close()
    before = _tree(path)
    bigger = study_from_dict({**raw, "budget": {"trials_per_cell": 8, "initial_points": 2}})
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        resume_study(path, study=bigger, extend=True)  # an extension is written only once the cluster is up
    after = _tree(path)
    after.pop(".tomosweep.lock", None)
    before.pop(".tomosweep.lock", None)
    assert after == before


def test_cli_cluster_failure_is_one_line_exit_2_and_no_store(tmp_path):
    import subprocess
    import sys

    study_file = tmp_path / "study.toml"
    study_file.write_text(
        '[phantom]\nname = "nanocubes"\nsize = 16\n[acquisition]\nn_haadf = [5]\nn_chem = [3]\n'
        "[methods.sirt]\nn_iter = {low = 2, high = 30}\n[budget]\ntrials_per_cell = 1\ninitial_points = 1\n"
        '[cluster]\nbackend = "address"\naddress = "tcp://127.0.0.1:9"\nstart_timeout = 2\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "tomosweep.cli", "run", str(study_file), "--store", str(tmp_path / "s.zarr")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "error: cannot reach the Dask scheduler at tcp://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s.zarr").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "tomosweep.cli", "run", str(study_file), "--store", "x.zarr", "--cluster", "k8s"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "--cluster 'k8s': not a backend" in bad.stderr


def test_a_backend_is_one_module_and_one_registration_line():
    from tomosweep.cluster import open_cluster
    from tomosweep.cluster.backends import BACKENDS, Backend, register
    from tomosweep.cluster.settings import ClusterSettings

    register(Backend("inprocess", "inprocess_backend:start", 10.0))
    try:
        with open_cluster(ClusterSettings(backend="inprocess")) as conn:
            assert conn.client.submit(sum, [1, 2, 3]).result() == 6
            assert "in-process" in conn.description
    finally:
        del BACKENDS["inprocess"]
    with pytest.raises(ValueError, match="must be 'local', 'local-cuda', 'slurm'"):
        ClusterSettings(backend="inprocess")
