"""The built-in model cxr-abnormal (retrain: ``python -m models.cxr_abnormal.train``)."""
