"""The built-in model body-region (retrain: ``python -m models.body_region.train``)."""
