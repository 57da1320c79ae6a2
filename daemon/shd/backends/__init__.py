"""Where predictions are made: `base` holds the interfaces and their contracts, `models` the two models' input and
output shapes, and one module per prediction service (`replicate`, `memory`)."""
