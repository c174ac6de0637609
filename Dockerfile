# syntax=docker/dockerfile:1
# The gateway in a container (first version). Build and run: see "Container" in the README.
#   docker build -t iot-gateway .
#   docker run --rm --device /dev/ttyUSB0 -v ./config.yaml:/etc/gateway/config.yaml:ro \
#       -v gateway-state:/var/lib/gateway iot-gateway
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
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir /src \
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

# SIGTERM starts the graceful shutdown (publish what is queued, announce offline, close ports),
# bounded by gateway.shutdown_timeout (default 10 s): give `docker stop` a longer --time.
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway"]
CMD ["run", "-c", "/etc/gateway/config.yaml"]
