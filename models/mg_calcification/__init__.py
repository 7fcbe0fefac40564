"""The built-in model mg-calcification (retrain: ``python -m models.mg_calcification.train``)."""
