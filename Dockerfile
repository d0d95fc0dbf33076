# One image for both roles: `streambridge web` and `streambridge bridge`.
FROM node:20-bookworm-slim AS assets
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-slim-bookworm
RUN useradd --system --home /app --shell /usr/sbin/nologin streambridge
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streambridge ./streambridge
COPY producers ./producers
COPY bridge ./bridge
COPY webapp ./webapp
COPY templates ./templates
COPY --from=assets /src/node_modules/socket.io-client/dist/socket.io.min.js ./webapp/static/vendor/socket.io.min.js
RUN pip install --no-cache-dir . && mkdir -p /data && chown streambridge /data
USER streambridge
ENV STREAMBRIDGE_LOG_FORMAT=json STREAMBRIDGE_USERS_FILE=/data/users.json
EXPOSE 5000
CMD ["streambridge", "web", "--host", "0.0.0.0", "--port", "5000"]
