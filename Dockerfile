# Rosetta's image: one image, three roles by command (compose.yaml runs all three):
#   web        the default command, gunicorn on port 8000
#   scheduler  flask rosetta scheduler
#   engine     flask rosetta engine
# and `flask db upgrade` once before them. Settings come from the environment, never the image.

# The bookworm variant: openjdk-17-jre-headless is in Debian 12, not in Debian 13, which the
# plain python:3.11-slim tag follows now. `make image-test` passes a stand-in when no registry
# answers.
ARG BASE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE} AS build
RUN python3 -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        -r /tmp/requirements.txt

FROM ${BASE}
# The engine runs Debezium on Java 17. Slim images leave out /usr/share/man, where the JRE's
# set-up links its manual pages.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openjdk-17-jre-headless \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
# The code stays root's; the instance folder (lock files) is Rosetta's.
RUN useradd --create-home --uid 10001 --user-group rosetta \
    && install -d -o rosetta -g rosetta /app/instance
# The requirements before the code: a change to the code rebuilds only the layers from here.
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY .flaskenv wsgi.py gunicorn.conf.py ./
COPY migrations migrations
COPY static static
COPY templates templates
COPY rosetta_web rosetta_web
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER rosetta
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["gunicorn", "wsgi:app", "--workers", "4", "--bind", "0.0.0.0:8000", "--access-logfile", "-", "--error-logfile", "-"]
