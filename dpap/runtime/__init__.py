"""Process plumbing below every layer: atomic result files, file locks, signal shielding, the memory allocator."""
