"""The built-in model ct-kidney-tumour (retrain: ``python -m models.ct_kidney_tumour.train``)."""
