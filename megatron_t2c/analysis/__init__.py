"""Analysis of trained models: embedding spaces (t-SNE), contamination, checkpoint correlation, the report."""
