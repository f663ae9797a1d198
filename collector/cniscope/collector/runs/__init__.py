"""Runs: a labelled probe suite repeated across node pairs (medians with min/max), the cluster's
fingerprint, service-scaling runs, all stored in the collector's SQLite and served by the Runs API."""
