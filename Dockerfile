# dmrelay: one image for the API, the worker, migrations and the sandbox.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 dmrelay
WORKDIR /srv/dmrelay
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
# Editable, so that `dmrelay migrate` finds migrations/ next to the app package.
RUN pip install --no-cache-dir -e . && mkdir media && chown dmrelay media
USER dmrelay
EXPOSE 8000
CMD ["dmrelay", "api", "--host", "0.0.0.0", "--port", "8000"]
