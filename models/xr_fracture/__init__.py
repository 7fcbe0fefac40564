"""The built-in model xr-fracture (retrain: ``python -m models.xr_fracture.train``)."""
