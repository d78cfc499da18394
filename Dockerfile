# One image for every program (trainer, prediction service, producer, consumer); compose picks
# the program with `command:`.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# A fixed UID so files written into volumes have a predictable owner.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app

# Dependencies before the source: editing code then reuses this (slow) layer.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# The source stays root-owned, so the app user cannot modify its own code.
COPY . .

# The only directory the app writes to. A new named volume mounted here copies this directory's
# ownership, which is what lets the non-root trainer write the model into it.
RUN mkdir -p model/artifacts && chown app:app model/artifacts

USER app

CMD ["python", "prediction_service.py"]
