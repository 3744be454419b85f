"""Remote-code style modelling files that benchsuite writes next to a checkpoint (trust_remote_code)."""
