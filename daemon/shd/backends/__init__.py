"""Where predictions are made: `base` holds the interfaces and their contracts, one module per implementation."""
