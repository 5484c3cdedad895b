"""The data stages: source files, function extraction, multi-rank corpus runs, preprocessing, dedup, GPT datasets."""
