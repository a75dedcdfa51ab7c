"""The networks: layers, heads, distributions, symlog/two-hot transforms and the world model."""
