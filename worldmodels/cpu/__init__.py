"""CPU speed-ups that keep the same math, applied only where they pay (float32 on a CPU): oneDNN routing
(matmul.py), packed weights (packed_linear.py), deferred weight gradients (deferred_grad.py), one-hot gathers
(onehot_feat.py), freed memory kept in the process (memory.py), and CpuRSSM (rssm.py), the RSSM that uses them."""
