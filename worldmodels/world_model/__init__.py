"""The world model: encoder, latent dynamics (worldmodels/dynamics), representation objective (worldmodels/objectives),
reward and continue heads, and their losses (world_model.py). It sits above the parts it is built on, so no import
runs back down to it from them."""
