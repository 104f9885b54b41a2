"""What a run reports: report.json / report.md and charts, timing and memory meters, model-FLOP utilisation."""
