# One image for every program (trainer, prediction service, producer, consumer); compose picks
# the program with `command:`.
FROM python:3.11-slim

# MPLCONFIGDIR: matplotlib (the training report) needs a writable cache, and /app is read-only
# to the app user.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app

# A fixed UID so files written into volumes have a predictable owner.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app

# Dependencies before the source: editing code then reuses this (slow) layer.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# The source stays root-owned, so the app user cannot modify its own code.
COPY . .

# The directories the app writes to: the model registry (a named volume under compose; a new
# named volume copies the directory's ownership, which lets the non-root trainer write into it)
# and model/artifacts (the cache of models downloaded from MLflow).
RUN mkdir -p model/registry model/artifacts && chown app:app model/registry model/artifacts

USER app

CMD ["python", "prediction_service.py"]
