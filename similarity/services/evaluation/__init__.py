"""Index quality: self-retrieval, approximate recall, labelled retrieval, duplicate detector."""
