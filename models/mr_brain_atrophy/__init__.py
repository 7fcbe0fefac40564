"""The built-in model mr-brain-atrophy (retrain: ``python -m models.mr_brain_atrophy.train``)."""
