"""The TES mapping, pure: paths, the task's dirs, resources, states, outputs."""

from __future__ import annotations

import pytest

from kran.domain import tes
from kran.domain.states import JobState

EX = tes.Executor(image="busybox", command=("true",))


def test_container_paths_must_be_absolute_normal_and_not_the_containers_own() -> None:
    assert tes.container_path("/data/", "f") == "/data"
    for bad in ("data", "/data/../etc", "/data/./x", "//data", "/", "/proc/1", "/sys", "/dev/shm", "/a\0b"):
        with pytest.raises(tes.TaskError):
            tes.container_path(bad, "f")


def test_the_task_binds_the_top_most_of_its_dirs() -> None:
    task = tes.Task(
        executors=(tes.Executor(image="i", command=("c",), stdout="/logs/out"),),
        inputs=(tes.Input("/data/in/a.txt", content="x"), tes.Input("/ref", url="file:///r", directory=True)),
        outputs=(tes.Output("/data/out/b", "file:///b"), tes.Output("/res/*.txt", "file:///c", path_prefix="/res")),
        volumes=("/vol/a/",),
    )
    assert tes.task_dirs(task) == ("/data/in", "/data/out", "/logs", "/ref", "/res", "/vol/a")
    assert tes.mounts(task) == ("/data/in", "/data/out", "/logs", "/ref", "/res", "/vol/a")
    nested = tes.Task(executors=(EX,), volumes=("/w",), outputs=(tes.Output("/w/x/y", "u"),))
    assert tes.mounts(nested) == ("/w",)
    with pytest.raises(tes.TaskError, match="directly in /"):
        tes.mounts(tes.Task(executors=(EX,), inputs=(tes.Input("/in.txt", content="x"),)))


def test_inputs_inside_each_other_and_many_volumes_are_refused_without_pairs() -> None:
    """Nested and repeated inputs are found by each path's own parents (every pair was
    compared before, and every pair of dirs for the mounts: 8,000 volumes took 12 s of the
    server's CPU per task, and 45 such tasks left /ping unanswered)."""

    def inputs(*given: tuple[str, bool]) -> tes.Task:
        return tes.Task(executors=(EX,), inputs=tuple(tes.Input(p, url="file:///x", directory=d) for p, d in given))

    for bad in (
        inputs(("/d/a", False), ("/d/a", False)),
        inputs(("/d", True), ("/d/a/b", False)),
        inputs(("/d/a/b", False), ("/d", True)),
        inputs(("/d/a", True), ("/d/a", True)),
    ):
        with pytest.raises(tes.TaskError, match="inside"):
            tes.check_task(bad)
    for good in (inputs(("/d/a", True), ("/d/a-b/c", False)), inputs(("/d/a", False), ("/d/ab", True))):
        assert tes.check_task(good) is good
    assert tes.mounts(tes.Task(executors=(EX,), volumes=("/d/a-b", "/d/a", "/d/a/c"))) == ("/d/a", "/d/a-b")
    many = tes.Task(executors=(EX,), volumes=tuple(f"/v{i}" for i in range(tes.MAX_VOLUMES + 1)))
    with pytest.raises(tes.TaskError, match="at most") as e:
        tes.check_task(many)
    assert e.value.field == "volumes"


def test_check_task_names_the_field() -> None:
    cases = {
        "executors": tes.Task(executors=()),
        "inputs[0]": tes.Task(executors=(EX,), inputs=(tes.Input("/d/x"),)),
        "inputs[0].type": tes.Task(executors=(EX,), inputs=(tes.Input("/d/x", content="c", directory=True),)),
        "outputs[0].path_prefix": tes.Task(executors=(EX,), outputs=(tes.Output("/a/*.txt", "u", path_prefix="/b"),)),
        "executors[0].workdir": tes.Task(executors=(tes.Executor("i", ("c",), workdir="rel"),)),
    }
    for field, task in cases.items():
        with pytest.raises(tes.TaskError) as e:
            tes.check_task(task)
        assert e.value.field == field


def test_resources_in_gib_backend_parameters_and_zones() -> None:
    be = tes.backend(tes.Resources(cpu_cores=2, ram_gb=1.5, disk_gb=10), default_mem_mb=1024)
    assert (be.request.cpus.min, be.request.mem_mb.min, be.request.disk_mb.min) == (2000, 1536, 10240)
    assert tes.backend(tes.Resources(), 777).request.mem_mb.min == 777
    params = {"Priority": "5", "retries": "2", "timeout": "1h", "network": "true", "VmSize": "x"}
    be = tes.backend(tes.Resources(backend_parameters=params, zones=("big",), preemptible=True), 1024)
    assert (be.priority, be.retries, be.timeout_s, be.network, be.node_class) == (5, 2, 3600.0, True, "big")
    assert any("VmSize" in w for w in be.warnings) and any("preempt" in w for w in be.warnings)
    with pytest.raises(tes.TaskError, match="VmSize"):
        tes.backend(tes.Resources(backend_parameters={"VmSize": "x"}, backend_parameters_strict=True), 1024)
    with pytest.raises(tes.TaskError):
        tes.backend(tes.Resources(zones=("a", "b")), 1024)
    with pytest.raises(tes.TaskError):
        tes.backend(tes.Resources(backend_parameters={"priority": "high"}), 1024)


def test_executors_run_in_order_with_stdio_redirected_through_variables() -> None:
    task = tes.Task(
        executors=(
            tes.Executor("i", ("echo", "$HOME"), stdout="/o/$(reboot)", ignore_error=True),
            tes.Executor("i", ("cat",), workdir="/o"),
        ),
        name="t",
    )
    be = tes.backend(task.resources, 512)
    first = tes.executor_spec(task, 0, be, [("/host/o", "/o", True)], None)
    assert first.command[:3] == ("/bin/sh", "-c", 'exec "$@" > "$KRAN_TES_STDOUT"') and first.command[4:] == (
        "echo",
        "$HOME",
    )
    assert first.env["KRAN_TES_STDOUT"] == "/o/$(reboot)"  # a path is never shell text
    second = tes.executor_spec(task, 1, be, [("/host/o", "/o", True)], 41)
    assert second.after_any == (41,) and second.after == ()  # the first may fail
    assert second.cwd == "/o" and second.binds == (("/host/o", "/o", True),) and second.name == "t #2"


def _job(state: JobState, started: float | None = 1.0, code: int | None = None) -> tes.JobView:
    return tes.JobView(state, code, started, None, f"{state}")


def test_states_from_the_jobs() -> None:
    assert tes.task_state("STAGING", [], False) == "INITIALIZING"
    assert tes.task_state("JOBS", [_job(JobState.QUEUED, None)], False) == "QUEUED"
    assert tes.task_state("JOBS", [_job(JobState.STARTING, None)], False) == "INITIALIZING"
    assert tes.task_state("JOBS", [_job(JobState.SUCCEEDED), _job(JobState.RUNNING)], False) == "RUNNING"
    assert tes.task_state("JOBS", [_job(JobState.SUCCEEDED), _job(JobState.QUEUED, None)], False) == "RUNNING"
    assert tes.task_state("JOBS", [_job(JobState.RUNNING)], True) == "CANCELING"
    assert tes.task_state("OUTPUTS", [], False) == "RUNNING"
    assert tes.task_state("COMPLETE", [], True) == "COMPLETE"


def test_outcomes_once_every_job_ended() -> None:
    two = tes.Task(executors=(tes.Executor("i", ("c",), ignore_error=True), EX))
    ok, failed = _job(JobState.SUCCEEDED), _job(JobState.FAILED, code=2)
    assert tes.jobs_outcome(two, [ok, _job(JobState.RUNNING)]) is None
    assert tes.jobs_outcome(two, [failed, ok]) == ("OUTPUTS", "")  # its first may fail
    assert tes.jobs_outcome(two, [ok, failed])[0] == "EXECUTOR_ERROR"  # type: ignore[index]
    assert tes.jobs_outcome(two, [ok, _job(JobState.DEPENDENCY_FAILED)])[0] == "SYSTEM_ERROR"  # type: ignore[index]
    assert tes.jobs_outcome(two, [ok, _job(JobState.KILLED)])[0] == "CANCELED"  # type: ignore[index]
    assert tes.jobs_outcome(two, [ok, _job(JobState.LOST)])[0] == "SYSTEM_ERROR"  # type: ignore[index]
    never_ran = _job(JobState.FAILED)  # no exit code: its image could not be pulled, its launch failed
    assert tes.jobs_outcome(two, [ok, never_ran])[0] == "SYSTEM_ERROR"  # type: ignore[index]


def test_outputs_files_directories_and_patterns() -> None:
    files = {"/w/a.txt": 1, "/w/b.log": 2, "/w/d/c.txt": 3, "/w/d/e/f": 4}
    assert tes.output_files(tes.Output("/w/a.txt", "u"), files, "B") == [("/w/a.txt", "B/w/a.txt")]
    assert [p for p, _ in tes.output_files(tes.Output("/w/d", "u", directory=True), files, "")] == [
        "/w/d/c.txt",
        "/w/d/e/f",
    ]
    pattern = tes.Output("/w/*.txt", "u", path_prefix="/w")
    assert [p for p, _ in tes.output_files(pattern, files, "")] == ["/w/a.txt"]  # * stays in its segment
    assert tes.output_files(tes.Output("/w/none", "u"), files, "") == []


def test_file_outputs_land_only_under_the_allowed_roots() -> None:
    roots = ["/results/{user}", "/scratch"]
    one = tes.Output("/w/a", "file:///results/alice/run/a")
    assert tes.output_destination(one, "/w/a", roots, "alice") == "/results/alice/run/a"
    assert tes.output_destination(one, "/w/a", roots, "bob") is None  # alice's dir is not bob's root
    assert tes.output_destination(tes.Output("/w/a", "file:///results/alice/../bob/a"), "/w/a", roots, "alice") is None
    assert tes.output_destination(tes.Output("/w/a", "s3://b/a"), "/w/a", roots, "alice") is None
    assert tes.output_destination(tes.Output("/w/a", "file://host/scratch/a"), "/w/a", roots, "alice") is None
    tree = tes.Output("/w/d", "file:///scratch/out", directory=True)
    assert tes.output_destination(tree, "/w/d/x/y", roots, "alice") == "/scratch/out/x/y"
    assert tes.output_destination(tes.Output("/w/a", "file:///elsewhere/a"), "/w/a", roots, "alice") is None
