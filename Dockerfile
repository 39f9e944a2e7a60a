# nats-archiver: the `archiver` command in a small image that runs as a non-root user
# on a read-only root filesystem (the Kubernetes CronJobs in deploy/ mount emptyDirs at
# /scratch and /tmp, the only places it writes).
#
#   docker build -t nats-archiver:0.1.0 .
#   docker run --rm --read-only --tmpfs /tmp --tmpfs /scratch nats-archiver:0.1.0 --help
#
# Base image: pinned to a Python patch release and Debian release, not to a digest: the
# digest cannot be looked up where this file was written (no registry access). Pin it
# when you build, e.g. FROM python:3.11.15-slim-trixie@sha256:<digest> (`docker
# buildx imagetools inspect python:3.11.15-slim-trixie` prints it), and let Renovate or
# Dependabot move tag and digest together. Both stages must use the same image: the
# virtualenv copied from the first stage points at its Python.
#
# Python dependencies are resolved from the ranges in pyproject.toml at build time; the
# project has no lock file, so two builds on different days can differ. A constraints
# file (pip install -c constraints.txt .) would pin them.

# -- build: install the package from this checkout into a virtualenv ---------------------
FROM python:3.11.15-slim-trixie AS build

# No pip version check, no download cache left in the layer.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the build needs (pyproject.toml names README.md as the long description),
# so a change to the tests or deploy files does not invalidate the install layer.
COPY pyproject.toml README.md ./
COPY archiver ./archiver
# As the README installs it (`pip install .`), without the demo/test extras: the image
# runs against a real NATS server and never starts its own. Every dependency ships
# manylinux wheels, so no compiler is needed. --compile writes the .pyc files now,
# since the read-only root filesystem cannot take them at run time.
RUN pip install --compile . \
    && archiver --version

# -- runtime ------------------------------------------------------------------------------
FROM python:3.11.15-slim-trixie

LABEL org.opencontainers.image.title="nats-archiver" \
      org.opencontainers.image.description="Archive NATS JetStream streams to zstd Parquet in S3; replay, verify, drill" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid (the CronJobs' runAsUser/runAsGroup say the same), so that
# Kubernetes can check runAsNonRoot without looking the name up.
RUN groupadd --system --gid 10001 archiver \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin archiver \
    && mkdir -p /scratch \
    && chown 10001:10001 /scratch

COPY --from=build /opt/venv /opt/venv

# HOME and TMPDIR point at /tmp, a writable mount in Kubernetes (boto3 and Python's
# tempfile look there); ARCHIVER_SPOOL_DIR is where `archiver run` writes files before
# upload (up to archive.file_max_bytes, 256 MiB by default): a mounted volume too.
# No bytecode writes at run time (the root filesystem is read-only); unbuffered output
# so the JSON summary reaches the pod log even if the process is killed.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    ARCHIVER_SPOOL_DIR=/scratch \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
WORKDIR /tmp

ENTRYPOINT ["archiver"]
CMD ["--help"]
