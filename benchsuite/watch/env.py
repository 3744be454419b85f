"""What `benchsuite watch` tells the agent in the watched process, through its environment. Kept apart from
the agent so that the command itself starts without importing torch."""
ENV_DIR = "BENCHSUITE_WATCH_DIR"
ENV_POLICY = "BENCHSUITE_WATCH_POLICY"
ENV_EVERY = "BENCHSUITE_WATCH_EVERY"
ENV_LOG = "BENCHSUITE_WATCH_LOG"
ENV_CONFIRM = "BENCHSUITE_WATCH_CONFIRM"
ENV_REPLICA_EVERY = "BENCHSUITE_WATCH_REPLICA_EVERY"
ENV_JSON = "BENCHSUITE_WATCH_JSON"
PREFIX = "[benchsuite watch]"
ENV_SIGNATURE = "BENCHSUITE_WATCH_SIGNATURE"            # --signature PATH (absolute)
ENV_SIGNATURE_STEP = "BENCHSUITE_WATCH_SIGNATURE_STEP"  # --signature-step N
ENV_COMMAND = "BENCHSUITE_WATCH_COMMAND"                # the watched command line, as JSON
ENV_RL = "BENCHSUITE_WATCH_RL"                          # --rl: a step may carry no signal (zero advantage)
