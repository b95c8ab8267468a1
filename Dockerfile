# syntax=docker/dockerfile:1
# Two images from one lock:
#   docker build --target trainer -t pystock-training .   the training job (the default target)
#   docker build --target server  -t pystock-mlflow .     `mlflow server` (PostgreSQL driver, basic auth)
FROM python:3.11.7-slim-bookworm AS base

# No .pyc litter, unbuffered logs, no pip cache in the layer; GitPython stays quiet without git
# (the image has no .git: the code version falls back to a hash of the sources).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GIT_PYTHON_REFRESH=quiet

RUN groupadd --system --gid 10001 pystock \
    && useradd --system --uid 10001 --gid pystock --create-home --home-dir /home/pystock pystock

WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock


FROM base AS server
COPY requirements-server.txt scripts/mlflow_server.sh scripts/mlflow_auth_setup.py ./
RUN pip install --no-cache-dir -r requirements-server.txt \
    && mkdir /mlartifacts && chown pystock:pystock /mlartifacts
# A named volume mounted here takes this directory's owner, so the server can write artifacts.
VOLUME ["/mlartifacts"]
USER 10001:10001
EXPOSE 5000
# Basic auth is on: the script refuses to start without MLFLOW_FLASK_SERVER_SECRET_KEY,
# MLFLOW_AUTH_ADMIN_PASSWORD and the trainer's and reader's passwords, which the image never holds.
ENTRYPOINT ["/app/mlflow_server.sh"]


FROM base AS trainer
# tini is PID 1: `docker stop` and Kubernetes signal PID 1 only, and a shell or Python there
# neither forwards the signal nor reaps orphans. -g passes it to the whole process group.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*
COPY --chown=pystock:pystock . .
USER 10001:10001
# The environment is the image, so the steps run with --env-manager local. The tracking server
# comes from MLFLOW_TRACKING_URI (and MLFLOW_TRACKING_USERNAME/PASSWORD); the entrypoint refuses
# to start without it rather than log into the container's own disk. Pass parameters as
# arguments: docker run ... pystock-training -P data_file=/data/new.csv
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/app/scripts/docker_entrypoint.sh"]
CMD []
