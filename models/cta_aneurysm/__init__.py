"""The built-in model cta-aneurysm (retrain: ``python -m models.cta_aneurysm.train``)."""
