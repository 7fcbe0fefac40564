"""The built-in model ct-chest-lungs (retrain: ``python -m models.ct_chest_lungs.train``)."""
