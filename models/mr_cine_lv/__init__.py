"""The built-in model mr-cine-lv (retrain: ``python -m models.mr_cine_lv.train``)."""
