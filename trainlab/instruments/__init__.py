"""Instruments that show why training behaves as it does: the LR range test, optimizer memory, overfit_batches.

    trainlab lr-find [overrides]     summary["optimizer_memory"]     trainer.overfit_batches=N
"""
