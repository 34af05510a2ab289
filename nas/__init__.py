"""Neural architecture search over a MnasNet/EfficientNet space: data, models, training, search."""
