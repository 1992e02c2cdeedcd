"""Datasets (one spec per dataset in the registry), raw files and feature extraction."""
