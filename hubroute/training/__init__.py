"""Training: the CARvE trainer, its configuration, and the pieces of the continual objective."""
