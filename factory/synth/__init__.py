"""Synthesis: plan identities x images x m, sample them on a Ray Data actor pool into
WebDataset shards with similarity metadata, and report on the result."""
