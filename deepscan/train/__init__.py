"""Training: recipes, datasets, pseudo-fakes, samplers and the trainer."""
