# mesos-stateful/suite: Debian Python 3.11 and the suite in /opt/mesos-stateful/venv (first on PATH);
# runs every service, the executor and the local cluster: python -m mesos_stateful.<service>.
# Build from the repository root after `make images` built the wheels (scripts/build_images.sh
# does both): docker build -f deploy/images/NAME.Dockerfile .
# BASE: Debian bookworm. Default: the local base `make images` makes (debian:bookworm-slim retagged
# where it can be pulled, else debootstrap + docker import); elsewhere --build-arg
# BASE=debian:bookworm-slim works as well.
ARG BASE=mesos-stateful/base:bookworm
FROM ${BASE}

# ---- shared by every image of deploy/images/ (keep identical: the build cache shares these layers)
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Debian's Python 3.11 (the host venv's wheels are cp311). Nothing a package installs may start.
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
RUN python3 -m venv /opt/mesos-stateful/venv
ENV VIRTUAL_ENV=/opt/mesos-stateful/venv \
    PATH=/opt/mesos-stateful/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The dependencies, offline, from wheels built on the host (build/wheels/deps: pinned to the host
# venv's versions); they change rarely, so this layer stays cached across code changes.
COPY build/wheels/deps/ /tmp/wheels/deps/
RUN pip install -q --no-index --find-links /tmp/wheels/deps -r /tmp/wheels/deps/requirements.txt \
 && rm -rf /tmp/wheels
# ---- end of the shared layers

# The project itself, last: a code change rebuilds only this layer.
COPY build/wheels/project/ /tmp/wheels/project/
RUN pip install -q --no-index --no-deps /tmp/wheels/project/*.whl && rm -rf /tmp/wheels \
 && python -c "import mesos_stateful.executor, mesos_stateful.localcluster"
WORKDIR /opt/mesos-stateful
CMD ["bash"]
