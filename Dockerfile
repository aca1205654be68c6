# syntax=docker/dockerfile:1
#
# One image for all five services. The orchestrator chooses the command:
#   proctor-gateway | proctor-router | proctor-status | proctor-notifier | proctor-lti
# (or `python -m services.<svc>`). Settings come from PROCTOR_* environment variables.
#
#   docker build -t exam-proctoring:0.1.0 .
#
# Every runtime dependency is pinned by requirements.lock and ships as a manylinux wheel,
# so the slim base needs no compiler. Test and type-checking tools are not installed.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/proctor
WORKDIR /src

# Dependencies get their own layer, rebuilt only when the pins change: with no source
# copied yet, the project installs as an empty distribution that pulls in just its deps.
COPY pyproject.toml requirements.lock ./
RUN /opt/proctor/bin/pip install -c requirements.lock . \
 && /opt/proctor/bin/pip uninstall -y exam-proctoring

COPY schemas ./schemas
COPY domain ./domain
COPY adapters ./adapters
COPY services ./services
COPY simulator ./simulator
COPY audit ./audit
# A regular (not editable) install: the code lives in site-packages, so the working
# directory of the running service holds only what the service writes there.
RUN /opt/proctor/bin/pip install --no-deps -c requirements.lock . \
 && cd / && /opt/proctor/bin/python -c "import services.gateway.__main__, services.router.__main__, services.status.__main__, services.notifier.__main__, services.lti.__main__"


FROM ${PYTHON_IMAGE}
ARG PROCTOR_UID=10001
RUN groupadd --system --gid "${PROCTOR_UID}" proctor \
 && useradd --system --uid "${PROCTOR_UID}" --gid proctor --home-dir /srv/proctor \
      --create-home --shell /usr/sbin/nologin proctor
COPY --from=build /opt/proctor /opt/proctor
# The proctor dashboard and the demo exam page, served by the gateway.
COPY web /opt/proctor/web

# Container defaults: listen on every interface (the settings default to loopback, which
# nothing outside the container could reach), log JSON for collectors, and fix the ops
# ports so EXPOSE below tells the truth. Orchestrators may still override any of them.
ENV PATH=/opt/proctor/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PROCTOR_GATEWAY__WEB_ROOT=/opt/proctor/web \
    PROCTOR_LOG_JSON=true \
    PROCTOR_GATEWAY__HOST=0.0.0.0 \
    PROCTOR_GATEWAY__PORT=8080 \
    PROCTOR_ROUTER__OPS_HOST=0.0.0.0 \
    PROCTOR_ROUTER__OPS_PORT=9101 \
    PROCTOR_STATUS__OPS_HOST=0.0.0.0 \
    PROCTOR_STATUS__OPS_PORT=9102 \
    PROCTOR_NOTIFIER__OPS_HOST=0.0.0.0 \
    PROCTOR_NOTIFIER__OPS_PORT=9103 \
    PROCTOR_LTI__HOST=0.0.0.0 \
    PROCTOR_LTI__PORT=8090

USER ${PROCTOR_UID}:${PROCTOR_UID}
# Writable scratch for the services (Faust keeps its data directory under the working
# directory); mount an emptyDir here when the root filesystem is read-only.
WORKDIR /srv/proctor

# gateway: WebSockets + /healthz /readyz /metrics; router, status, notifier: ops ports;
# lti: its /lti/ routes + /healthz /readyz /metrics.
EXPOSE 8080 9101 9102 9103 8090

# No default service on purpose: a container started without a command must not quietly
# become gateway slot 0 next to the real one. It names the choices and exits instead.
CMD ["sh", "-c", "echo 'choose a command: proctor-gateway | proctor-router | proctor-status | proctor-notifier | proctor-lti' >&2; exit 64"]
