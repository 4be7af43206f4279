# The ledger's one image: `ledger serve`, `ledger project` and `ledger relay` run from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY schemas ./schemas
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /var/lib/ledger --create-home ledger
USER ledger
EXPOSE 8000 9108
ENTRYPOINT ["ledger"]
CMD ["--help"]
