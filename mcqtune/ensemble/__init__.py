"""Fusing runs (`mcq-tune ensemble`): members with provenance, combination rules, the ensemble report."""
