"""Accuracy: OPE metrics (LaSOT/OTB, GOT-10k), resumable evaluation runs, plots and the classical
baselines they are compared with."""
