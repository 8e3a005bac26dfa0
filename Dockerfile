# dmrelay: one image for the API, the worker, migrations and the sandbox.

# Build: the dependencies from the lock (every hash checked), then dmrelay, into a virtualenv.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY deploy/requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes -r /tmp/requirements.lock
WORKDIR /srv/dmrelay
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
# Editable, so that `dmrelay migrate` finds migrations/ next to the app package; --no-deps:
# they all came from the lock.
RUN pip install --no-deps -e .

# Run: the virtualenv and the source, no build tools, not root.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
RUN useradd --create-home --uid 10001 dmrelay
COPY --from=build /opt/venv /opt/venv
COPY --from=build /srv/dmrelay /srv/dmrelay
WORKDIR /srv/dmrelay
RUN mkdir media && chown dmrelay media
USER dmrelay
EXPOSE 8000
# The API's readiness (GET /readyz); compose gives the worker and the others their own.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["dmrelay", "api", "--check", "--port", "8000"]
CMD ["dmrelay", "api", "--host", "0.0.0.0", "--port", "8000"]
