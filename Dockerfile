FROM python:3.11-slim
WORKDIR /app
# torch first, pinned to the CPU build range the package accepts
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY setup.cfg pyproject.toml README.md ./
COPY dicom_ai_node ./dicom_ai_node
COPY models ./models
# the postgres extra: psycopg, for storage.database_url = "postgresql+psycopg://..."; the
# brain extra: deepbet, whose wheel holds the mr-brain-extraction networks
RUN pip install --no-cache-dir ".[postgres,brain]"
# Run as an unprivileged user; /data (the volume: storage, SQLite index if no database
# URL, the first admin's password file) belongs to it. A new named volume takes this
# owner from the image.
RUN useradd --system --uid 10001 --home-dir /data --no-create-home dicom-ai-node \
    && mkdir -p /data && chown dicom-ai-node /data
USER dicom-ai-node
ENV DICOM_AI_NODE_STORAGE_ROOT=/data/storage
EXPOSE 11112 8080
# /livez answers without credentials (docs/operations.md)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/livez', timeout=4)"]
CMD ["dicom-ai-node", "serve"]
