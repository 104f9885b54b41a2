"""Run folders and their locks, the run identity (provenance), prediction stores, the k-fold folder layout,
distributed helpers."""
