"""The built-in model xr-body-region (retrain: ``python -m models.xr_body_region.train``)."""
