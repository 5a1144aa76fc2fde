"""The optimizers trainlab writes itself (torch has the others): Lion, SophiaG, Muon with an AdamW part."""
