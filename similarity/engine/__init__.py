"""Pure similarity code (no Django): embedders, runtimes, imaging, threads, the Faiss index."""
