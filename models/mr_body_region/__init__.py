"""The built-in model mr-body-region (retrain: ``python -m models.mr_body_region.train``)."""
