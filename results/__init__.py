"""Results as chunked arrays (Zarr v3): per-window CCFs and running stacks, their layout, and their exports."""
