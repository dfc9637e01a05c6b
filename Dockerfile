# The production image: Airflow 3.3.2 on Python 3.11 with the product installed as a package
# (from the lock, so the image runs what CI tested), its DAGs and plugins in place.
# Every Airflow component of docker-compose.yaml runs this image with another command.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

# libpq for psycopg2 at run time; nothing is compiled (binary wheels only).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --home-dir /opt/airflow --uid 50000 airflow

WORKDIR /opt/airflow

# Dependencies first, so a code change does not reinstall them.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --only-binary=:all: -r /tmp/requirements.txt

COPY pyproject.toml README.md /opt/fabconnect-dsr/
COPY include /opt/fabconnect-dsr/include
RUN pip install --no-deps /opt/fabconnect-dsr

COPY --chown=airflow:airflow dags /opt/airflow/dags
COPY --chown=airflow:airflow plugins /opt/airflow/plugins
# Preloads the task bodies' heavy modules in the scheduler / Celery workers (once, not per task).
COPY --chown=airflow:airflow config/airflow_local_settings.py /opt/airflow/config/airflow_local_settings.py

USER 50000
ENTRYPOINT ["/usr/bin/tini", "--", "airflow"]
CMD ["version"]
