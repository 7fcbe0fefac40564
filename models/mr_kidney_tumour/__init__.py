"""The built-in model mr-kidney-tumour (retrain: ``python -m models.mr_kidney_tumour.train``)."""
