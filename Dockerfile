# The MABEAM runner image. `make images` builds it on a Debian base of its own (mabeam-base, made
# with debootstrap: no image registry needed); on a machine with a registry it builds as it is:
#   docker build -t mabeam .
#   docker run --rm --network host mabeam runner --nats nats://127.0.0.1:4222 --http-port 9100
# The entry point is the `mabeam` command, so every subcommand works: `docker run mabeam status`.
# The project and its dependencies are installed from this tree and PyPI into /opt/mabeam.
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PATH=/opt/mabeam/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY mabeam mabeam
COPY bus bus
COPY registry registry
COPY agents agents
COPY ops ops
COPY perf perf
RUN python3 -m venv /opt/mabeam \
    && pip install . \
    && useradd --system --uid 10001 --no-create-home mabeam

WORKDIR /
USER mabeam
EXPOSE 9100
ENTRYPOINT ["mabeam"]
CMD ["runner", "--http-host", "0.0.0.0", "--http-port", "9100"]
