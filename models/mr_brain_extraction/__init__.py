"""The built-in model mr-brain-extraction: deepbet's pretrained networks (``pip install
'dicom-ai-node[brain]'``); measured by ``python -m models.mr_brain_extraction.evaluate``."""
