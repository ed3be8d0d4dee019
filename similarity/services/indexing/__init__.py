"""What a build writes: embeddings, the Faiss index update, publishing, stored neighbors."""
