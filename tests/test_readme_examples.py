"""The README's command examples run as written, against a real server and real S3:
only the server's URL and the bucket are this test's own."""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path

from helpers import publish, run_cli
from natsserver import NatsServer
from s3server import SeaweedS3
from test_archive import add_streams

README = Path(__file__).resolve().parent.parent / "README.md"
FIVE = {"AUTH": "auth.>", "COMPUTE": "compute.>", "GATEWAY": "gateway.>", "SFS": "sfs.>"}


def examples() -> list[str]:
    """The command lines of the README's "Use" block, continuation lines joined and
    optional [parts] left out, one line per alternative of a|b|c."""
    block = README.read_text().split("## Use\n\n```sh\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    lines = []
    for line in joined.splitlines():
        line = re.sub(r"\[[^\]]*\](\.\.\.)?", "", line).strip()
        if not line or line == "archiver demo":  # the demo has its own test
            continue
        choice = re.search(r"(\w+(?:\|\w+)+)", line)
        if choice:
            lines += [line.replace(choice[1], option) for option in choice[1].split("|")]
        else:
            lines.append(line)
    return lines


def test_the_readmes_examples_run_as_written(
    nats: NatsServer, s3_env: SeaweedS3, tmp_path: Path
) -> None:
    dr = NatsServer(nats.binary, tmp_path)  # the empty server a restore rebuilds
    dr.start()
    try:
        _run_examples(nats, s3_env, dr)
    finally:
        dr.stop()


def _run_examples(nats: NatsServer, s3_env: SeaweedS3, dr: NatsServer) -> None:
    asyncio.run(add_streams(nats.url, {**FIVE, "RESTORE": "restore.>"}))
    asyncio.run(publish(nats.url, "AUTH", [f"auth.user.u{i}.created" for i in range(20)]))
    for name, subject in FIVE.items():
        if name != "AUTH":
            asyncio.run(publish(nats.url, name, [subject.replace(">", "e")] * 5))
    store = f"s3://{s3_env.bucket}/readme-examples"
    ran = []
    for line in examples():
        line = line.replace("nats://nats:4222", nats.url).replace("s3://my-bucket/nats", store)
        line = line.replace("nats://dr-nats:4222", dr.url)
        argv = shlex.split(line)
        assert argv[0] == "archiver"
        result = run_cli(*argv[1:], env=s3_env.env())
        assert result.returncode == 0, (line, result.stdout + result.stderr)
        ran.append(argv[1])
    assert ran[:3] == ["run", "status", "ls"] and "replay" in ran and "drill" in ran
    assert ran.count("ddl") == 4 and "restore" in ran
