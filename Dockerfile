# teambot in a container: `docker build -t teambot .`, then run it with its tokens in the
# environment and /data on a volume (see compose.yml and README "Running in production").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
RUN pip install '.[postgres]' \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home teambot \
    && mkdir /data \
    && chown teambot:teambot /data

# SQLite on the volume unless DATABASE_URL names a PostgreSQL server; metrics and
# /healthz on 9464 (all interfaces, for the scraper); one JSON object per log line.
ENV DATABASE_URL=sqlite:////data/teambot.db \
    TEAMBOT_METRICS_PORT=9464 \
    TEAMBOT_LOG_FORMAT=json
VOLUME ["/data"]
WORKDIR /data
USER teambot
# 9464: /metrics and /healthz; 3000: Slack HTTP mode (TEAMBOT_SLACK_PORT), when used.
EXPOSE 9464 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ['TEAMBOT_METRICS_PORT'], timeout=4)"]
CMD ["teambot", "run"]
