# One image for both roles: `streambridge web` and `streambridge bridge`.
FROM python:3.11-slim-bookworm
RUN useradd --system --home /app --shell /usr/sbin/nologin streambridge
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streambridge ./streambridge
COPY producers ./producers
COPY bridge ./bridge
COPY webapp ./webapp
COPY templates ./templates
RUN pip install --no-cache-dir ".[app,bridge]" && mkdir -p /data && chown streambridge /data
USER streambridge
ENV STREAMBRIDGE_LOG_FORMAT=json STREAMBRIDGE_USERS_FILE=/data/users.json
EXPOSE 5000
CMD ["streambridge", "web", "--host", "0.0.0.0", "--port", "5000"]
