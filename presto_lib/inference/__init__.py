"""The fast inference path (after `distill`, before `eval` in the import order): `dit.FastDenoiser`,
`pipeline.FastTextToMusic`, and `systems` pairing each system's reference and fast generators."""
