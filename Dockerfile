# syntax=docker/dockerfile:1
# The gateway in a container. Build and run: see docs/operations/container.md.
#   docker build -t iot-gateway .
#   docker run -d --device /dev/ttyUSB0 -v ./config.yaml:/etc/gateway/config.yaml:ro \
#       -v gateway-state:/var/lib/gateway iot-gateway
# Offline builds: `--build-context wheels=DIR`, a directory with wheels of the package's
# dependencies and of setuptools (`pip wheel . -w DIR && pip download setuptools -d DIR`); pip
# then installs from there and never asks an index. Without it, this stage is empty: PyPI.
FROM scratch AS wheels

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway/ gateway/

# The package in its own venv; an unprivileged user in the dialout group (serial ports) with the
# state directory as its home.
RUN --mount=type=bind,from=wheels,target=/wheels \
    if [ -n "$(ls -A /wheels)" ]; then set -- --no-index --find-links /wheels; fi \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir "$@" /src \
 && rm -rf /src \
 && useradd --system --no-log-init --uid 10001 --user-group --groups dialout \
      --home-dir /var/lib/gateway --no-create-home --shell /usr/sbin/nologin gateway \
 && install -d -o gateway -g gateway -m 0750 /var/lib/gateway \
 && install -d -m 0755 /etc/gateway

# gateway.state_dir (default /var/lib/gateway): keep it across container restarts.
VOLUME ["/var/lib/gateway"]
WORKDIR /var/lib/gateway
# Numeric, so that runtimes need not resolve the name; it is the `gateway` user created above.
USER 10001

# /metrics, /healthz, /readyz, /status (metrics.port). To scrape from outside the container,
# set metrics.host: 0.0.0.0 and publish the port.
EXPOSE 9108
# /healthz answers 200 while the event loop runs and the supervisor makes progress. Python's
# urllib, so the image needs no curl; GATEWAY_HEALTHZ_URL if metrics.port is not 9108.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen(os.environ.get('GATEWAY_HEALTHZ_URL', 'http://127.0.0.1:9108/healthz'), timeout=4)"]

# SIGTERM starts the graceful shutdown (publish what is queued, announce offline, close ports),
# bounded by gateway.shutdown_timeout (default 10 s): give `docker stop` a longer --time.
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway"]
CMD ["run", "-c", "/etc/gateway/config.yaml"]
