"""Runs and their analysis: run files, run/sweep directories, sweeps, compare, search."""
