# The MABEAM runner image. docker-compose.yml builds it for its runners; on its own:
#   docker build -t mabeam .
#   docker run --rm mabeam runner --nats nats://HOST:4222 --http-host 0.0.0.0 --http-port 9100
# The entry point is the `mabeam` command, so every subcommand works: `docker run mabeam status`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY mabeam mabeam
COPY bus bus
COPY registry registry
COPY agents agents
COPY ops ops
COPY perf perf
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home mabeam

WORKDIR /
USER mabeam
EXPOSE 9100
ENTRYPOINT ["mabeam"]
CMD ["runner", "--http-host", "0.0.0.0", "--http-port", "9100"]
