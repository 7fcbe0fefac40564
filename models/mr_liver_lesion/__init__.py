"""The built-in model mr-liver-lesion (retrain: ``python -m models.mr_liver_lesion.train``)."""
