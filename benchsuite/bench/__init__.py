"""`benchsuite bench`: memory and throughput of checkpointing, accumulation, precision and LoRA."""
