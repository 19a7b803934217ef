"""The study on Bedrock, above the local study it calls: checks, estimate, confirmation, the
resources, then the pipeline; and its dry run, the same road on the simulated backend."""
