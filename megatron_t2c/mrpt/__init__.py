"""The paper's method (stdlib + torch only, shipped verbatim into HF exports): markers, formats, modality, separation, objectives."""
