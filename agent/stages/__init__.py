"""The pipeline's stages: decode, dedup, sample, classify, flows, counters; each takes a batch and hands one on."""
