"""The agent: acting, imagination and the DreamerV3 losses; lambda returns and the normaliser; the LaProp optimiser."""
