"""Execution strategies: how the plain model runs (compiled steps, the whole update as one graph, CUDA graphs).

Each is applied to the plain agent from outside, by the setup code, and is tested to compute what the plain agent
computes; nothing in the model's folders imports one."""
