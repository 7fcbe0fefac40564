FROM python:3.11-slim
WORKDIR /app
# torch first, pinned to the CPU build range the package accepts
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY setup.cfg pyproject.toml README.md ./
COPY dicom_ai_node ./dicom_ai_node
COPY models ./models
RUN pip install --no-cache-dir .
EXPOSE 11112 8080
CMD ["dicom-ai-node", "serve"]
