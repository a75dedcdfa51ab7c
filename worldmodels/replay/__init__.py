"""The replay: steps in a ring buffer sampled as fixed-length windows, one stream per env (buffer.py), and its chunk
files on disk (store.py)."""
