"""Testing: generated images and volumes with their truth, one module per body part and modality."""
