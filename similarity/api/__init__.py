"""The DRF API: similar articles, index status and rebuilds, duplicates."""
