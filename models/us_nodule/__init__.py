"""The built-in model us-nodule (retrain: ``python -m models.us_nodule.train``)."""
