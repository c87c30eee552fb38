# The one image of the code location (docs/deploy.md, "The image"). Render builds it for the code
# location, the webserver and the daemon (render.yaml, each service with its own command); the
# Dagster Helm chart runs it as the user deployment and as every run's pod (deploy/helm-values.yaml).
# It installs requirements.lock and nothing else: CI installs requirements-test.lock, which is the
# same pins plus the test tools, so what the tests pass with is what runs here.
#
# The Debian release is pinned in the tag: a new one changes the system libraries the wheels run
# against, a change to make on purpose.

# Build stage: pip's downloads and the project's build (setuptools in pip's isolated build
# environment) stay here; only the finished virtual environment goes on.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The same path as in the final stage: a venv's scripts name their interpreter by absolute path.
RUN python -m venv /opt/venv
# The lock alone first, so that its layer (the slow one) is rebuilt only when the lock changes.
COPY requirements.lock /tmp/requirements.lock
# The lock's hashes put pip in hash-checking mode: it installs exactly the files that were locked
# and refuses a package the lock does not name. Wheels only: every locked package has one for
# CPython 3.11 on x86_64 and aarch64, so no compiler is needed (psycopg2-binary brings its libpq).
RUN /opt/venv/bin/pip install --only-binary=:all: -r /tmp/requirements.lock
COPY pyproject.toml /src/pyproject.toml
COPY retention_pipelines /src/retention_pipelines
# The dependencies are the lock's: --no-deps keeps pip from resolving pyproject's ranges again.
# A regular (not editable) install, so the final stage needs no copy of the source.
RUN /opt/venv/bin/pip install --no-deps /src \
    && /opt/venv/bin/pip check

FROM python:3.11-slim-bookworm
# Logs reach the platform's log stream line by line, not when a buffer fills. The bytecode was
# compiled at install, by root: the user could not add any.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home
# RETENTION_ENV stays unset: outside the demo the settings refuse to start without the production
# variables (the README's configuration table), which the deployment provides.

# A fixed numeric uid, so that Kubernetes' runAsNonRoot can verify it and volumes can be granted
# to it. Its home takes what libraries cache there (matplotlib's font list).
RUN groupadd --system --gid 10001 retention \
    && useradd --system --uid 10001 --gid retention --create-home --home-dir /home/retention \
       --shell /usr/sbin/nologin retention

# Everything below is root's and read-only to the user: the code, its dependencies, the instance
# configuration. The Helm chart mounts its own dagster.yaml over this one.
COPY --from=build /opt/venv /opt/venv
COPY deploy/dagster.yaml /opt/dagster/dagster_home/dagster.yaml
COPY deploy /opt/dagster/app/deploy
# The one place it writes: DAGSTER_HOME/storage, where runs launched by this container keep their
# compute logs and step outputs (the instance's local artifact storage).
RUN install -d -o retention -g retention /opt/dagster/dagster_home/storage

WORKDIR /opt/dagster/app
USER 10001:10001
# 3000: the webserver (render.yaml's webserver command); 4000: the code location's gRPC server.
EXPOSE 3000 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "retention_pipelines.definitions", "--location-name", "retention_pipelines"]
